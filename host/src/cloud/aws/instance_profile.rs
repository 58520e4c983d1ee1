//! Instance profiles: the controller makes one per EC2NodeClass that names a `role` (EC2 launches
//! with a profile, not a role), named stably from the cluster, region and class, tagged with the
//! cluster and the class so the IAM policy can scope every action on it by tag; the role in it
//! follows the class; and it is removed (role out, profile deleted) when the class is deleted.

use sha2::Digest as _;

use super::{AwsCloud, sdk_message, tags};

/// The profile of a class: `dovetail_<cluster>_<16 hex digits of sha256(region/class)>`, the same
/// in every process and every release.
pub fn profile_name(cluster: &str, region: &str, class: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{region}/{class}").as_bytes());
    format!("dovetail_{cluster}_{}", &hex::encode(digest)[..16])
}

fn is_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    sdk_message(e).contains("NoSuchEntity")
}

impl AwsCloud {
    /// The roles in a profile; `None` when there is no such profile.
    /// The error is the service's message.
    fn profile_roles(&mut self, name: &str) -> Result<Option<Vec<String>>, String> {
        self.count("GetInstanceProfile");
        match self.bridge.wait(
            self.iam
                .get_instance_profile()
                .instance_profile_name(name)
                .send(),
        ) {
            Ok(o) => Ok(Some(
                o.instance_profile()
                    .map(|p| {
                        p.roles()
                            .iter()
                            .map(|r| r.role_name().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(sdk_message(&e)),
        }
    }

    /// The instance profile of class `class` holding `role`: created (tagged) when missing, its
    /// role replaced when the class now names another.
    pub(super) fn ensure_instance_profile(
        &mut self,
        class: &str,
        role: &str,
    ) -> Result<String, String> {
        let name = profile_name(&self.settings.cluster_name, &self.settings.region, class);
        let fail = |call: &str, e: &dyn std::fmt::Display| {
            format!("instance profile {name} for role {role}: {call}: {}", e)
        };
        let roles: Vec<String> = match self.profile_roles(&name) {
            Ok(Some(roles)) => roles,
            Ok(None) => {
                let tag = |k: &str, v: &str| {
                    aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .expect("key and value are set")
                };
                self.count("CreateInstanceProfile");
                self.bridge
                    .wait(
                        self.iam
                            .create_instance_profile()
                            .instance_profile_name(&name)
                            .tags(tag(tags::CLUSTER, &self.settings.cluster_name))
                            .tags(tag(tags::NODECLASS, class))
                            .send(),
                    )
                    .map_err(|e| fail("CreateInstanceProfile", &sdk_message(&e)))?;
                Vec::new()
            }
            Err(message) => return Err(fail("GetInstanceProfile", &message)),
        };
        // A role name in a profile carries no path (IAM refuses `/path/name` there).
        let role = role.rsplit('/').next().unwrap_or(role);
        for other in roles.iter().filter(|r| r.as_str() != role) {
            self.count("RemoveRoleFromInstanceProfile");
            self.bridge
                .wait(
                    self.iam
                        .remove_role_from_instance_profile()
                        .instance_profile_name(&name)
                        .role_name(other)
                        .send(),
                )
                .map_err(|e| fail("RemoveRoleFromInstanceProfile", &sdk_message(&e)))?;
        }
        if !roles.iter().any(|r| r == role) {
            self.count("AddRoleToInstanceProfile");
            self.bridge
                .wait(
                    self.iam
                        .add_role_to_instance_profile()
                        .instance_profile_name(&name)
                        .role_name(role)
                        .send(),
                )
                .map_err(|e| fail("AddRoleToInstanceProfile", &sdk_message(&e)))?;
        }
        Ok(name)
    }

    /// Deletes this cluster's instance profiles whose class is none of `live` — classes deleted
    /// while no controller ran (a restart converges with no profile left behind). Only names
    /// this cluster's classes would have are touched, and the IAM policy lets the controller
    /// delete only profiles tagged with its cluster. Returns the profiles deleted.
    pub fn collect_instance_profiles(
        &mut self,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, String> {
        let (cluster, region) = (
            self.settings.cluster_name.clone(),
            self.settings.region.clone(),
        );
        let prefix = format!("dovetail_{cluster}_");
        let kept: std::collections::BTreeSet<String> = live
            .iter()
            .map(|c| profile_name(&cluster, &region, c))
            .collect();
        let mut found = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            self.count("ListInstanceProfiles");
            let out = self
                .bridge
                .wait(
                    self.iam
                        .list_instance_profiles()
                        .set_marker(marker.clone())
                        .send(),
                )
                .map_err(|e| format!("ListInstanceProfiles: {}", sdk_message(&e)))?;
            found.extend(
                out.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name().to_string())
                    .filter(|n| n.starts_with(&prefix) && !kept.contains(n)),
            );
            marker = out.marker().map(str::to_string);
            if !out.is_truncated() || marker.is_none() {
                break;
            }
        }
        for name in &found {
            tracing::info!(instance_profile = %name, "deleting the instance profile of a deleted EC2NodeClass");
            self.delete_profile(name, "a deleted EC2NodeClass")?;
        }
        Ok(found)
    }

    /// Removes the instance profile the controller made for a deleted class: its role taken
    /// out, then the profile deleted. A profile already gone is no error.
    pub fn delete_instance_profile(&mut self, class: &str) -> Result<(), String> {
        let name = profile_name(&self.settings.cluster_name, &self.settings.region, class);
        self.delete_profile(&name, &format!("EC2NodeClass {class}"))
    }

    /// Empties and deletes one profile; `of` says whose it is, for errors.
    fn delete_profile(&mut self, name: &str, of: &str) -> Result<(), String> {
        let fail = |call: &str, e: &dyn std::fmt::Display| {
            format!("instance profile {name} of {of}: {call}: {}", e)
        };
        let roles = match self.profile_roles(name) {
            Ok(Some(roles)) => roles,
            Ok(None) => return Ok(()),
            Err(message) => return Err(fail("GetInstanceProfile", &message)),
        };
        for role in roles {
            self.count("RemoveRoleFromInstanceProfile");
            match self.bridge.wait(
                self.iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(name)
                    .role_name(&role)
                    .send(),
            ) {
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(fail("RemoveRoleFromInstanceProfile", &sdk_message(&e))),
            }
        }
        self.count("DeleteInstanceProfile");
        match self.bridge.wait(
            self.iam
                .delete_instance_profile()
                .instance_profile_name(name)
                .send(),
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(fail("DeleteInstanceProfile", &sdk_message(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_name_is_stable_and_differs_by_class_and_region() {
        let a = profile_name("prod", "us-east-1", "default");
        assert_eq!(a, profile_name("prod", "us-east-1", "default"));
        assert_eq!(
            a,
            "dovetail_prod_".to_string() + &a["dovetail_prod_".len()..]
        );
        assert_eq!(a.len(), "dovetail_prod_".len() + 16);
        assert_ne!(a, profile_name("prod", "us-east-1", "gpu"));
        assert_ne!(a, profile_name("prod", "eu-west-1", "default"));
    }
}
