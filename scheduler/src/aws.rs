//! AWS plumbing shared by every AWS SDK client Sluice makes (Step Functions, ECS, EMR):
//! where an AWS API is (the SDK's default chain, with an endpoint — an emulator — or a
//! region on top), and the error of a failed call.

/// Where an AWS API is: the SDK's chain, or an endpoint and region given.
#[derive(Debug, Clone, Default)]
pub struct AwsApi {
    /// An endpoint instead of AWS's (an emulator).
    pub endpoint: Option<String>,
    /// The region, when the environment does not give one.
    pub region: Option<String>,
}

impl AwsApi {
    /// The SDK configuration for this API.
    pub async fn config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        loader.load().await
    }
}

/// An AWS API call that failed, with what AWS answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message}")]
pub struct AwsCallError {
    /// The API call (`UpdateService`).
    pub call: &'static str,
    /// What went wrong, with the SDK's whole error chain.
    pub message: String,
}

impl AwsCallError {
    /// The failure of `call`, with every cause the SDK gives.
    pub(crate) fn new(call: &'static str, err: impl std::error::Error) -> Self {
        Self {
            call,
            message: aws_sdk_sfn::error::DisplayErrorContext(err).to_string(),
        }
    }
}
