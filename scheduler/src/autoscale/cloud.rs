//! The cloud providers: an ECS service's desiredCount or an EMR instance group's
//! instance count is the executor count, read and set through the AWS APIs.

use super::ProviderSettings;
use crate::aws::AwsCallError;

/// Why reading or setting a cloud provider's executor count failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CloudError {
    /// The AWS call failed.
    #[error(transparent)]
    Call(#[from] AwsCallError),
    /// The ECS service does not exist.
    #[error("ECS service {service} not found in {cluster}")]
    NoService {
        /// The ECS cluster.
        cluster: String,
        /// The service looked for.
        service: String,
    },
    /// The EMR instance group does not exist.
    #[error("instance group {instance_group_id} not in {cluster_id}")]
    NoInstanceGroup {
        /// The EMR cluster.
        cluster_id: String,
        /// The instance group looked for.
        instance_group_id: String,
    },
}

/// A cloud provider: the executor count is a number it holds.
pub(super) enum Cloud {
    Ecs {
        client: aws_sdk_ecs::Client,
        cluster: String,
        service: String,
    },
    Emr {
        client: aws_sdk_emr::Client,
        cluster_id: String,
        instance_group_id: String,
    },
}

impl Cloud {
    pub(super) async fn connect(provider: &ProviderSettings) -> Option<Self> {
        match provider {
            ProviderSettings::Ecs {
                cluster,
                service,
                api,
            } => Some(Cloud::Ecs {
                client: aws_sdk_ecs::Client::new(&api.config().await),
                cluster: cluster.clone(),
                service: service.clone(),
            }),
            ProviderSettings::Emr {
                cluster_id,
                instance_group_id,
                api,
            } => Some(Cloud::Emr {
                client: aws_sdk_emr::Client::new(&api.config().await),
                cluster_id: cluster_id.clone(),
                instance_group_id: instance_group_id.clone(),
            }),
            ProviderSettings::Local { .. } | ProviderSettings::External => None,
        }
    }

    /// The count the provider holds now.
    pub(super) async fn current(&self) -> Result<usize, CloudError> {
        match self {
            Cloud::Ecs {
                client,
                cluster,
                service,
            } => {
                let described = client
                    .describe_services()
                    .cluster(cluster)
                    .services(service)
                    .send()
                    .await
                    .map_err(|e| AwsCallError::new("DescribeServices", e))?;
                let desired = described
                    .services()
                    .first()
                    .map(|s| s.desired_count())
                    .ok_or_else(|| CloudError::NoService {
                        cluster: cluster.clone(),
                        service: service.clone(),
                    })?;
                Ok(desired.max(0) as usize)
            }
            Cloud::Emr {
                client,
                cluster_id,
                instance_group_id,
            } => {
                let groups = client
                    .list_instance_groups()
                    .cluster_id(cluster_id)
                    .send()
                    .await
                    .map_err(|e| AwsCallError::new("ListInstanceGroups", e))?;
                let group = groups
                    .instance_groups()
                    .iter()
                    .find(|g| g.id() == Some(instance_group_id.as_str()))
                    .ok_or_else(|| CloudError::NoInstanceGroup {
                        cluster_id: cluster_id.clone(),
                        instance_group_id: instance_group_id.clone(),
                    })?;
                Ok(group.requested_instance_count().unwrap_or(0).max(0) as usize)
            }
        }
    }

    /// Sets the count.
    pub(super) async fn set(&self, count: usize) -> Result<(), CloudError> {
        match self {
            Cloud::Ecs {
                client,
                cluster,
                service,
            } => client
                .update_service()
                .cluster(cluster)
                .service(service)
                .desired_count(count as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsCallError::new("UpdateService", e).into()),
            Cloud::Emr {
                client,
                cluster_id,
                instance_group_id,
            } => client
                .modify_instance_groups()
                .cluster_id(cluster_id)
                .instance_groups(
                    aws_sdk_emr::types::InstanceGroupModifyConfig::builder()
                        .instance_group_id(instance_group_id)
                        .instance_count(count as i32)
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsCallError::new("ModifyInstanceGroups", e).into()),
        }
    }
}
