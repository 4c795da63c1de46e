//! KEDA's external scaler (`externalscaler.ExternalScaler`) on the scheduler's gRPC
//! port: KEDA asks whether there is work and how many tasks wait, and scales the
//! executor Deployment (to zero when idle).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sluice_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef, external_scaler_server::ExternalScaler,
};
use tonic::{Request, Response, Status};

use crate::autoscale::{Demand, TASKS_METRIC, demand};
use crate::runner::{BallistaScheduler, RunManager};

/// KEDA's external scaler on the scheduler: active only when there is work (so KEDA
/// scales the executor Deployment to zero when idle), with the tasks ready or running
/// as the metric.
#[derive(Clone)]
pub struct KedaScaler {
    ballista: BallistaScheduler,
    manager: Arc<RunManager>,
    /// Tasks one executor takes (the HPA target per replica).
    pub slots_per_executor: usize,
}

impl std::fmt::Debug for KedaScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KedaScaler").finish_non_exhaustive()
    }
}

impl KedaScaler {
    /// A scaler reading the scheduler's queue.
    pub fn new(
        ballista: BallistaScheduler,
        manager: Arc<RunManager>,
        slots_per_executor: usize,
    ) -> Self {
        Self {
            ballista,
            manager,
            slots_per_executor,
        }
    }

    async fn demand(&self) -> Demand {
        demand(&self.ballista, &self.manager).await.demand
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        Ok(Response::new(IsActiveResponse {
            result: self.demand().await.is_active(),
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let scaler = self.clone();
        let stream = futures::stream::unfold((scaler, None), |(scaler, last)| async move {
            loop {
                let active = scaler.demand().await.is_active();
                if last != Some(active) {
                    return Some((
                        Ok(IsActiveResponse { result: active }),
                        (scaler, Some(active)),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: TASKS_METRIC.into(),
                target_size: self.slots_per_executor as i64,
                target_size_float: self.slots_per_executor as f64,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        _request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let tasks = self.demand().await.tasks();
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: TASKS_METRIC.into(),
                metric_value: tasks as i64,
                metric_value_float: tasks as f64,
            }],
        }))
    }
}
