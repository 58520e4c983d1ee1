//! Node requirements (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`) as sets of allowed
//! values per label key, with the intersection the simulation narrows claims by.

use std::collections::{BTreeMap, BTreeSet};

/// A requirement operator: the NodePool resource's own, so manifests need no translation.
pub use crate::api::nodepool::RequirementOperator as Operator;

/// One requirement on a label key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// A requirement from its parts.
    pub fn new(key: &str, operator: Operator, values: &[&str]) -> Self {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// The values one key may take.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Allowed {
    /// `Some`: only these values. `None`: any value not excluded.
    only: Option<BTreeSet<String>>,
    excluded: BTreeSet<String>,
    /// Exclusive numeric bounds (`Gt`, `Lt`).
    above: Option<i64>,
    below: Option<i64>,
    /// The label must be absent (`DoesNotExist`).
    absent: bool,
    /// The label must be present (`Exists`, `In`, `Gt`, `Lt`).
    present: bool,
}

impl Allowed {
    /// Whether a label value (or its absence) is allowed.
    pub fn allows(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return !self.present };
        if self.absent || self.excluded.contains(v) {
            return false;
        }
        if let Some(only) = &self.only
            && !only.contains(v)
        {
            return false;
        }
        if self.above.is_some() || self.below.is_some() {
            let Ok(n) = v.parse::<i64>() else {
                return false;
            };
            if self.above.is_some_and(|a| n <= a) || self.below.is_some_and(|b| n >= b) {
                return false;
            }
        }
        true
    }

    fn restrict(&mut self, r: &Requirement) {
        match r.operator {
            Operator::In => {
                let set: BTreeSet<String> = r.values.iter().cloned().collect();
                self.only = Some(match self.only.take() {
                    Some(only) => only.intersection(&set).cloned().collect(),
                    None => set,
                });
                self.present = true;
            }
            Operator::NotIn => self.excluded.extend(r.values.iter().cloned()),
            Operator::Exists => self.present = true,
            Operator::DoesNotExist => self.absent = true,
            Operator::Gt | Operator::Lt => {
                let bound = r.values.first().and_then(|v| v.parse::<i64>().ok());
                self.present = true;
                match (r.operator, bound) {
                    (Operator::Gt, Some(b)) => {
                        self.above = Some(self.above.map_or(b, |a| a.max(b)))
                    }
                    (Operator::Lt, Some(b)) => {
                        self.below = Some(self.below.map_or(b, |a| a.min(b)))
                    }
                    // An unparsable bound allows nothing.
                    _ => self.only = Some(BTreeSet::new()),
                }
            }
        }
    }

    fn intersect(&mut self, other: &Allowed) {
        if let Some(o) = &other.only {
            self.only = Some(match self.only.take() {
                Some(only) => only.intersection(o).cloned().collect(),
                None => o.clone(),
            });
        }
        self.excluded.extend(other.excluded.iter().cloned());
        if let Some(a) = other.above {
            self.above = Some(self.above.map_or(a, |x| x.max(a)));
        }
        if let Some(b) = other.below {
            self.below = Some(self.below.map_or(b, |x| x.min(b)));
        }
        self.absent |= other.absent;
        self.present |= other.present;
    }

    /// Whether some value (or absence) satisfies the set.
    pub fn satisfiable(&self) -> bool {
        if self.absent && self.present {
            return false;
        }
        if self.absent {
            return true;
        }
        if let (Some(a), Some(b)) = (self.above, self.below)
            && a.saturating_add(1) >= b
        {
            return false;
        }
        match &self.only {
            Some(only) => only.iter().any(|v| self.allows(Some(v))),
            None => true,
        }
    }

    /// The allowed values when the set is finite.
    pub fn values(&self) -> Option<impl Iterator<Item = &String>> {
        self.only
            .as_ref()
            .map(|o| o.iter().filter(|v| self.allows(Some(v))))
    }
}

/// Requirements on every constrained key. Keys not present are unconstrained.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Requirements {
    keys: BTreeMap<String, Allowed>,
}

impl Requirements {
    /// Requirements from a list (all must hold).
    pub fn from_list(list: &[Requirement]) -> Self {
        let mut out = Requirements::default();
        for r in list {
            out.add(r);
        }
        out
    }

    /// `nodeSelector`-style equality requirements.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = Requirements::default();
        for (k, v) in labels {
            out.add(&Requirement::new(k, Operator::In, &[v]));
        }
        out
    }

    /// Adds one requirement.
    pub fn add(&mut self, r: &Requirement) {
        self.keys.entry(r.key.clone()).or_default().restrict(r);
    }

    /// Both sets of requirements at once.
    pub fn intersection(&self, other: &Requirements) -> Requirements {
        let mut out = self.clone();
        for (k, a) in &other.keys {
            out.keys.entry(k.clone()).or_default().intersect(a);
        }
        out
    }

    /// Whether some node could satisfy both.
    pub fn compatible(&self, other: &Requirements) -> bool {
        other.keys.iter().all(|(k, a)| match self.keys.get(k) {
            None => a.satisfiable(),
            Some(mine) => {
                let mut both = mine.clone();
                both.intersect(a);
                both.satisfiable()
            }
        })
    }

    /// [`Requirements::compatible`] for a NodePool's requirements: a key they do not define is a
    /// label the pool's nodes will not have, unless `well_known` says every node gets it — as
    /// Karpenter treats undefined custom labels. So a pod selecting `team: a` needs a pool that
    /// defines `team`; one excluding it (`NotIn`, `DoesNotExist`) does not.
    pub fn compatible_on_pool(
        &self,
        other: &Requirements,
        well_known: impl Fn(&str) -> bool,
    ) -> bool {
        self.undefined_key(other, &well_known).is_none()
            && other.keys.iter().all(|(k, a)| match self.keys.get(k) {
                None => a.satisfiable(),
                Some(mine) => {
                    let mut both = mine.clone();
                    both.intersect(a);
                    both.satisfiable()
                }
            })
    }

    /// The first key of `other` that needs a label these requirements do not define and no
    /// node gets anyway.
    pub fn undefined_key<'a>(
        &self,
        other: &'a Requirements,
        well_known: impl Fn(&str) -> bool,
    ) -> Option<&'a str> {
        other
            .keys
            .iter()
            .find(|(k, a)| !self.keys.contains_key(*k) && !well_known(k) && !a.allows(None))
            .map(|(k, _)| k.as_str())
    }

    /// The first key (in order) no node could satisfy, if any.
    pub fn unsatisfiable_key(&self) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, a)| !a.satisfiable())
            .map(|(k, _)| k.as_str())
    }

    /// The allowed values of a key (`None` when unconstrained).
    pub fn get(&self, key: &str) -> Option<&Allowed> {
        self.keys.get(key)
    }

    /// Whether a node with these labels satisfies every requirement. `label` answers a key.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.keys.iter().all(|(k, a)| a.allows(label(k)))
    }

    /// Constrained keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Human-readable form, e.g. `kubernetes.io/arch In [arm64] and …`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .keys
            .iter()
            .map(|(k, a)| {
                let mut s = Vec::new();
                if let Some(only) = &a.only {
                    s.push(format!(
                        "{k} In [{}]",
                        only.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                if !a.excluded.is_empty() {
                    s.push(format!(
                        "{k} NotIn [{}]",
                        a.excluded.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                if let Some(g) = a.above {
                    s.push(format!("{k} Gt {g}"));
                }
                if let Some(l) = a.below {
                    s.push(format!("{k} Lt {l}"));
                }
                if a.absent {
                    s.push(format!("{k} DoesNotExist"));
                } else if a.present && s.is_empty() {
                    s.push(format!("{k} Exists"));
                }
                s.join(" and ")
            })
            .collect();
        parts.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::Operator::*;
    use super::*;

    fn reqs(list: &[(&str, Operator, &[&str])]) -> Requirements {
        Requirements::from_list(
            &list
                .iter()
                .map(|(k, o, v)| Requirement::new(k, *o, v))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn operators() {
        let r = reqs(&[
            ("arch", In, &["arm64", "amd64"]),
            ("arch", NotIn, &["amd64"]),
        ]);
        assert!(r.matches(|_| Some("arm64")));
        assert!(!r.matches(|_| Some("amd64")));
        assert!(!r.matches(|_| None));
        let r = reqs(&[("gen", Gt, &["5"]), ("gen", Lt, &["8"])]);
        assert!(r.matches(|_| Some("6")) && r.matches(|_| Some("7")));
        assert!(
            !r.matches(|_| Some("5")) && !r.matches(|_| Some("8")) && !r.matches(|_| Some("x"))
        );
        let r = reqs(&[("gpu", DoesNotExist, &[])]);
        assert!(r.matches(|_| None) && !r.matches(|_| Some("t4")));
        let r = reqs(&[("gpu", Exists, &[])]);
        assert!(!r.matches(|_| None) && r.matches(|_| Some("t4")));
    }

    #[test]
    fn compatibility_and_intersection() {
        let pool = reqs(&[("arch", In, &["amd64", "arm64"]), ("zone", In, &["a", "b"])]);
        let pod = reqs(&[("arch", In, &["arm64"])]);
        assert!(pool.compatible(&pod));
        let both = pool.intersection(&pod);
        assert_eq!(
            both.get("arch")
                .unwrap()
                .values()
                .unwrap()
                .collect::<Vec<_>>(),
            vec!["arm64"]
        );
        assert!(!pool.compatible(&reqs(&[("zone", In, &["c"])])));
        assert!(!pool.compatible(&reqs(&[("zone", DoesNotExist, &[])])));
        assert!(
            pool.compatible(&reqs(&[("team", NotIn, &["x"])])),
            "unconstrained key"
        );
        assert!(!reqs(&[("gen", Gt, &["5"])]).compatible(&reqs(&[("gen", Lt, &["6"])])));
        assert_eq!(
            pool.intersection(&reqs(&[("zone", In, &["c"])]))
                .unsatisfiable_key(),
            Some("zone")
        );
    }

    #[test]
    fn describe_reads_like_the_manifest() {
        let r = reqs(&[
            ("kubernetes.io/arch", In, &["arm64"]),
            ("category", In, &["p"]),
        ]);
        assert_eq!(
            r.describe(),
            "category In [p] and kubernetes.io/arch In [arm64]"
        );
    }
}
