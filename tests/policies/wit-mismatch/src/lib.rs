//! A scorer for `dovetail:policy@9.0.0`, a version the controller does not know.

wit_bindgen::generate!({ path: "wit", world: "scorer" });

struct Future;

impl exports::dovetail::policy::lifecycle::Guest for Future {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl exports::dovetail::policy::scoring::Guest for Future {
    fn score(prices: Vec<f64>) -> Vec<f64> {
        prices.iter().map(|p| -p).collect()
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);
