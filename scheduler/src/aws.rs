//! Where an AWS API is, for every AWS SDK client Sluice makes (Step Functions, ECS,
//! EMR): the SDK's default chain, with an endpoint (an emulator) or region on top.

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
