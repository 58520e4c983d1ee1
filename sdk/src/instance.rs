//! Facts that follow from an instance type's name (`m7g.large`: category `m`, family `m7g`,
//! generation 7, size `large`), as the well-known node labels carry them.

use crate::InstanceType;

impl InstanceType {
    /// Family, e.g. `m7g` (the part before the dot).
    pub fn family(&self) -> &str {
        self.name
            .split_once('.')
            .map_or(self.name.as_str(), |(f, _)| f)
    }

    /// Category, e.g. `m` (the family's leading letters; `inf` for `inf2`, `u` for `u-6tb1`).
    pub fn category(&self) -> &str {
        let family = self.family();
        let end = family
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(family.len());
        &family[..end]
    }

    /// Generation, e.g. 7 (the digits after the category); 0 when the name has none.
    pub fn generation(&self) -> u32 {
        let rest = &self.family()[self.category().len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().unwrap_or(0)
    }

    /// Size, e.g. `large` (the part after the dot).
    pub fn size(&self) -> &str {
        self.name.split_once('.').map_or("", |(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use crate::Arch;
    use crate::testing::catalog_type;

    #[test]
    fn derived_from_the_name() {
        let facts = |name: &str| {
            let t = catalog_type(name, Arch::Amd64, 2, 4).build();
            (
                t.category().to_string(),
                t.family().to_string(),
                t.generation(),
                t.size().to_string(),
            )
        };
        assert_eq!(
            facts("m7g.large"),
            ("m".into(), "m7g".into(), 7, "large".into())
        );
        assert_eq!(
            facts("inf2.xlarge"),
            ("inf".into(), "inf2".into(), 2, "xlarge".into())
        );
        assert_eq!(
            facts("u-6tb1.metal"),
            ("u".into(), "u-6tb1".into(), 0, "metal".into())
        );
        assert_eq!(
            facts("c6in.32xlarge"),
            ("c".into(), "c6in".into(), 6, "32xlarge".into())
        );
    }
}
