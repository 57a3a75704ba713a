//! etcd's Lease service (LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases) over [`crate::service::LeaseService`], with etcd's answers for a lease that
//! does not exist: a keep-alive gets TTL 0 and a time-to-live TTL -1, not an error.

use std::pin::Pin;

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::lease_server::Lease;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::status::{self, LEASE_TTL_TOO_LARGE};
use super::Grpc;
use crate::kv::Refusal;
use crate::lessor::MAX_TTL_SECONDS;
use crate::service::{Rejection, ServiceError};

type KeepAlives = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for Grpc {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        // etcd refuses a TTL above its MaxLeaseTTL (the lessor's cap) rather than clamping.
        if req.ttl > MAX_TTL_SECONDS {
            return Err(Status::out_of_range(LEASE_TTL_TOO_LARGE));
        }
        let granted = self
            .services
            .lease
            .grant(req.id, req.ttl)
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(self.current_header()),
            id: granted.id,
            ttl: granted.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        let done = self
            .services
            .lease
            .revoke(id)
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.header(done.revision)),
        }))
    }

    /// One answer per request, in order, until the client closes its side.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAlives>, Status> {
        let grpc = self.clone();
        let answers = request.into_inner().then(move |req| {
            let grpc = grpc.clone();
            async move { grpc.keep_alive(req?.id).await }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let found = self
            .services
            .lease
            .time_to_live(req.id, req.keys)
            .await
            .map_err(status::status)?;
        let answer = match found {
            Some(t) => pb::LeaseTimeToLiveResponse {
                header: Some(self.header(t.revision)),
                id: t.id,
                ttl: t.ttl,
                granted_ttl: t.granted_ttl,
                keys: t.keys.into_iter().map(|k| k.to_vec()).collect(),
            },
            None => pb::LeaseTimeToLiveResponse {
                header: Some(self.current_header()),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(answer))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (ids, revision) = self.services.lease.list().await.map_err(status::status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header(revision)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

impl Grpc {
    /// One keep-alive: the lease's new TTL, or 0 if it does not exist (etcd's answer).
    async fn keep_alive(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let ttl = match self.services.lease.keep_alive(id).await {
            Ok(ttl) => ttl,
            Err(ServiceError::Rejected(Rejection::Refused(Refusal::LeaseNotFound(_)))) => 0,
            Err(e) => return Err(status::status(e)),
        };
        Ok(pb::LeaseKeepAliveResponse {
            header: Some(self.current_header()),
            id,
            ttl,
        })
    }
}
