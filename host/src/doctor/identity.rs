//! Who the checks run as. With `--role-arn` the doctor assumes the controller's role, so the
//! controller's own calls — and the dry runs of its first launch — are judged by the controller's
//! policy, not by the (usually broader) rights of the person running the doctor.

use aws_credential_types::provider::SharedCredentialsProvider;

use super::Verdict;
use crate::cloud::aws::dry_run::DryRun;

/// The controller's identity: the role assumed (with the credentials to use), or the caller's own.
pub async fn controller(
    operator: &aws_config::SdkConfig,
    role_arn: Option<&str>,
) -> (Verdict, Option<SharedCredentialsProvider>) {
    let Some(role) = role_arn else {
        return match caller(operator).await {
            Ok(arn) => (
                Verdict::Skipped(format!(
                    "no --role-arn: the checks run as {arn} (the controller itself when run in its pod; elsewhere pass --role-arn so its own policy is what is checked)"
                )),
                None,
            ),
            Err(why) => (Verdict::Problem(why), None),
        };
    };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("dovetail-doctor")
        .configure(operator)
        .build()
        .await;
    let provider = SharedCredentialsProvider::new(provider);
    let assumed = operator
        .to_builder()
        .credentials_provider(provider.clone())
        .build();
    match caller(&assumed).await {
        Ok(arn) => (
            Verdict::Ok(format!(
                "assumed {role}: the controller's calls run as {arn}"
            )),
            Some(provider),
        ),
        Err(why) => (
            Verdict::Problem(format!(
                "cannot assume {role} ({why}): its trust policy must let you assume it, or run the doctor in the controller's pod (kubectl -n dovetail exec deploy/dovetail -- dovetail doctor)"
            )),
            None,
        ),
    }
}

/// The ARN the configuration's credentials act as (`sts:GetCallerIdentity`, which needs no
/// permission).
async fn caller(config: &aws_config::SdkConfig) -> Result<String, String> {
    aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map(|o| o.arn().unwrap_or("an unnamed identity").to_string())
        .map_err(|e| {
            crate::bounded::bounded(
                &aws_sdk_sts::error::DisplayErrorContext(&e).to_string(),
                300,
            )
        })
}

/// One line for a class's dry-run launch: every call EC2 would make, or the first refused and
/// how to fix it.
pub fn dry_runs(name: &str, runs: Vec<DryRun>, assumed: bool) -> super::Check {
    if runs.is_empty() {
        return super::check(
            name,
            Verdict::Skipped("no AMI or subnet resolved to launch with".into()),
        );
    }
    let calls: Vec<&str> = runs.iter().map(|r| r.call).collect();
    match runs
        .iter()
        .find_map(|r| r.outcome.as_ref().err().map(|e| (r.call, e)))
    {
        None => super::check(
            name,
            Verdict::Ok(format!(
                "{} would succeed (DryRun){}",
                calls.join(", "),
                if assumed {
                    ""
                } else {
                    " with the doctor's own credentials"
                }
            )),
        ),
        Some((call, why)) => super::check(
            name,
            Verdict::Problem(format!(
                "{call} would be refused: {why}: the controller's role needs the stack's policy (DovetailControllerPolicy-<cluster>, deploy/cloudformation.yaml) and the class may name only the stack's node role"
            )),
        ),
    }
}
