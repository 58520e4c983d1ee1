//! A policy that misbehaves on request (`config: {mode: …}`), so the sandbox is tested against
//! real compiled components. Modes: `good` (default, cheapest), `spin`, `spin-init`, `bomb`,
//! `trap`, `nan`, `short`, `bad-veto`, `reject`, `error`, `bad-index`, `twice`, `probe`,
//! `forge` (an error with newlines, ANSI escapes and 40 MB, after a log line of the same),
//! `forge-init` (the same error from `init`), `sly-nan` (good in the controller's canary rounds,
//! NaN scores otherwise), `big-trap` (good on claims under 5 pods, a panic on bigger ones).

use dovetail_policy_sdk::{
    Action, Claim, ClaimScores, ConsolidationRound, Consolidator, LaunchCandidate, Params, Policy,
    Round, Scorer, Verdict,
};

pub struct Hostile {
    mode: String,
}

impl Policy for Hostile {
    fn new(params: &Params) -> Result<Self, String> {
        let mode = params.get("mode").unwrap_or("good").to_string();
        match mode.as_str() {
            "reject" => Err("mode=reject: this configuration is refused on purpose".into()),
            "spin-init" => spin(),
            "forge-init" => Err(format!(
                "ok\nlevel=ERROR msg=\"forged line\"\r\x1b[31mred{}",
                "x".repeat(40 << 20)
            )),
            _ => Ok(Hostile { mode }),
        }
    }
}

fn spin() -> ! {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

fn bomb() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn probe() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let env = std::env::vars().count();
    let fs = std::fs::read_dir("/").map(|_| "open").unwrap_or("denied");
    let net = std::net::TcpStream::connect("127.0.0.1:1")
        .map(|_| "open")
        .unwrap_or("denied");
    format!("now={now} env={env} fs={fs} net={net}")
}

impl Scorer for Hostile {
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        Verdict::Score(-option.offering.price)
    }

    fn score_claim(&self, round: &Round, claim: &Claim) -> Result<ClaimScores, String> {
        let good = || {
            claim
                .options
                .iter()
                .map(|&o| Ok(self.score_option(claim, round.resolve(o)?)))
                .collect::<Result<ClaimScores, String>>()
        };
        // The canary rounds' NodePool is "canary": a policy can tell them apart, so a canary
        // cannot catch every failure (`sly-nan` passes it, then answers NaN).
        let mode = match self.mode.as_str() {
            "sly-nan" if claim.node_pool == "canary" => "good",
            "sly-nan" => "nan",
            "sly-trap" if claim.node_pool == "canary" => "good",
            "sly-trap" => "trap",
            // Works on small claims, panics on a claim of 5 pods or more (as a policy with an
            // off-by-one in its packing maths might).
            "big-trap" if claim.pods.len() >= 5 => {
                panic!("claim of {} pods: index out of range", claim.pods.len())
            }
            "big-trap" => "good",
            m => m,
        };
        match mode {
            "spin" => spin(),
            "bomb" => bomb(),
            "trap" => panic!("hostile policy panicked on purpose"),
            "error" => Err("mode=error: no ranking today".into()),
            "forge" => {
                let forged = "ok\nlevel=ERROR msg=\"forged line\"\r\x1b[31mred";
                dovetail_policy_sdk::log(dovetail_policy_sdk::LogLevel::Warn, forged);
                Err(format!("{forged}{}", "x".repeat(40 << 20)))
            }
            "nan" => {
                let mut v = good()?;
                v.scores[0] = f64::NAN;
                Ok(v)
            }
            "short" => {
                let mut v = good()?;
                v.scores.pop();
                Ok(v)
            }
            "bad-veto" => {
                let mut v = good()?;
                let n = v.scores.len() as u32;
                v.vetoes.push(dovetail_policy_sdk::Veto {
                    option_index: n + 3,
                    reason: "out of range".into(),
                });
                Ok(v)
            }
            "probe" => Ok(claim
                .options
                .iter()
                .map(|_| Verdict::Veto(probe()))
                .collect()),
            _ => good(),
        }
    }
}

impl Consolidator for Hostile {
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String> {
        match self.mode.as_str() {
            "spin" => spin(),
            "bad-index" => Ok(vec![Action::Execute(round.moves.len() as u32 + 7)]),
            "twice" => Ok(vec![Action::Execute(0), Action::Execute(0)]),
            _ => Ok((0..round.moves.len() as u32).map(Action::Execute).collect()),
        }
    }
}

dovetail_policy_sdk::export_policy!(Hostile);
