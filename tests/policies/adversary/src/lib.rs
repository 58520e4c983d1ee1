//! An adversary within the contract, for the property tests (`tests/safety.rs`): every answer is
//! valid — finite scores, vetoes of real options, actions on real moves — and otherwise arbitrary,
//! drawn from `config: {seed: N}` and the round itself, so a run is repeatable. Consolidation:
//! a sequence of execute and keep actions of any length, in any order (each move once, as the
//! contract says; a repeated move is refused whole, see the `hostile` fixture). Scoring:
//! any scores, and vetoes of any options (sometimes all of them).

use dovetail_policy_sdk::{
    Action, Claim, ClaimScores, ConsolidationRound, Consolidator, Kept, LaunchCandidate, Params,
    Policy, Round, Scorer, Verdict, Veto,
};

pub struct Adversary {
    seed: u64,
}

impl Policy for Adversary {
    fn new(params: &Params) -> Result<Self, String> {
        params.only(&["seed"])?;
        Ok(Adversary {
            seed: params.parse_or("seed", 1u64)?,
        })
    }
}

/// splitmix64: one draw per call.
struct Draw(u64);

impl Draw {
    fn new(parts: &[u64]) -> Self {
        let mut d = Draw(0x9E37_79B9_7F4A_7C15);
        for &p in parts {
            d.0 ^= p;
            d.next();
        }
        d
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

impl Scorer for Adversary {
    fn score_option(&self, _claim: &Claim, option: LaunchCandidate<'_>) -> Verdict {
        Verdict::Score(-option.offering.price)
    }

    fn score_claim(&self, round: &Round, claim: &Claim) -> Result<ClaimScores, String> {
        let mut d = Draw::new(&[
            self.seed,
            round.now as u64,
            claim.pods.len() as u64,
            claim.options.len() as u64,
            claim.requests.cpu_millis,
        ]);
        let n = claim.options.len() as u64;
        let scores = (0..n)
            .map(|_| (d.below(2_000_001) as f64 - 1_000_000.0) / 1000.0)
            .collect();
        // Usually a few vetoes; one round in eight vetoes everything.
        let mut vetoes = if d.below(8) == 0 {
            (0..n as u32).collect::<Vec<_>>()
        } else {
            (0..d.below(n.min(4) + 1))
                .map(|_| d.below(n) as u32)
                .collect()
        };
        // The contract allows each option one veto.
        vetoes.sort_unstable();
        vetoes.dedup();
        Ok(ClaimScores {
            scores,
            vetoes: vetoes
                .into_iter()
                .map(|i| Veto {
                    option_index: i,
                    reason: "the adversary says no".into(),
                })
                .collect(),
        })
    }
}

impl Consolidator for Adversary {
    fn consolidate(&self, round: &ConsolidationRound) -> Result<Vec<Action>, String> {
        let mut d = Draw::new(&[
            self.seed,
            round.now as u64,
            round.candidates.len() as u64,
            round.moves.len() as u64,
        ]);
        let n = round.moves.len() as u64;
        if n == 0 {
            return Ok(Vec::new());
        }
        // Any length, any order; the first mention of a move is the one that counts (the
        // contract allows one per move: a repeat is refused whole, which the `hostile`
        // fixture's `twice` mode covers).
        let len = d.below(2 * n + 2);
        let mut seen = vec![false; n as usize];
        let mut actions = Vec::new();
        for _ in 0..len {
            let i = d.below(n) as u32;
            if std::mem::replace(&mut seen[i as usize], true) {
                continue;
            }
            actions.push(if d.below(3) == 0 {
                Action::Keep(Kept {
                    move_index: i,
                    reason: "the adversary keeps it".into(),
                })
            } else {
                Action::Execute(i)
            });
        }
        Ok(actions)
    }
}

dovetail_policy_sdk::export_policy!(Adversary);
