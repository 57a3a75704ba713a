//! etcd's Maintenance service, the calls coordinate serves so far: Status (this member's
//! raft and store state), Alarm (the NOSPACE alarm of the quota: list, raise, disarm),
//! MoveLeader (sent to the leader, as etcdctl does), HashKV and Hash (a hash of the history,
//! equal on every replica at one revision), Snapshot (a backup, `crate::backup`, in
//! [`SNAPSHOT_CHUNK`] pieces, its SHA-256 the last piece, as etcd sends it) and Defragment (a no-op: coordinate's store is in memory, with no file to
//! defragment).

use std::pin::Pin;

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::maintenance_server::Maintenance;
use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::status;
use super::Grpc;
use crate::kv::{Alarm, AlarmKind};
use crate::service::{Rejection, ServiceError, Unavailable};

/// Bytes of a backup per Snapshot response (etcd's size).
pub const SNAPSHOT_CHUNK: usize = 32 << 10;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

/// The etcd version Status reports: the API level served. Kubernetes trusts watch progress
/// notifications (and serves consistent lists from its watch cache) from etcd 3.5.13 and
/// 3.4.31 on, the releases that gave them the meaning `grpc::watch` implements.
pub const REPORTED_VERSION: &str = "3.5.13";

#[tonic::async_trait]
impl Maintenance for Grpc {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self
            .services
            .status
            .status()
            .await
            .map_err(status::status)?;
        let (alarms, _) = self.services.kv.alarms().await.map_err(status::status)?;
        let learner = s
            .members
            .iter()
            .any(|m| m.id == s.id && m.role == "learner");
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(s.state.revision)),
            version: REPORTED_VERSION.to_string(),
            db_size: s.state.total_bytes as i64,
            leader: s.leader,
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors: alarms.iter().map(alarm_text).collect(),
            db_size_in_use: s.state.total_bytes as i64,
            is_learner: learner,
        }))
    }

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let req = request.into_inner();
        let kv = &self.services.kv;
        let raised = match (req.action(), req.alarm()) {
            (AlarmAction::Get, _) => kv.alarms().await.map(|(a, _)| a),
            (AlarmAction::Deactivate, pb::AlarmType::Nospace) => {
                kv.disarm(AlarmKind::NoSpace).await
            }
            (AlarmAction::Activate, pb::AlarmType::Nospace) => {
                let alarm = Alarm {
                    member: req.member_id,
                    kind: AlarmKind::NoSpace,
                };
                kv.set_alarm(alarm, true).await
            }
            // No other alarm exists here: nothing to raise or clear.
            (_, _) => kv.alarms().await.map(|(a, _)| a),
        }
        .map_err(status::status)?;
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.current_header()),
            alarms: raised
                .iter()
                .map(|a| pb::AlarmMember {
                    member_id: a.member,
                    alarm: alarm_type(a.kind) as i32,
                })
                .collect(),
        }))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let to = request.into_inner().target_id;
        match self.services.status.move_leader(to).await {
            Ok(()) => Ok(Response::new(pb::MoveLeaderResponse {
                header: Some(self.current_header()),
            })),
            Err(ServiceError::Rejected(Rejection::Misdirected(_))) => {
                Err(Status::failed_precondition("etcdserver: not leader"))
            }
            Err(ServiceError::Rejected(Rejection::Invalid(_))) => Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            )),
            Err(ServiceError::Unavailable(Unavailable::Timeout)) => Err(Status::unavailable(
                "etcdserver: request timed out, leader transfer took too long",
            )),
            Err(e) => Err(status::status(e)),
        }
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let at = request.into_inner().revision.max(0) as u64;
        let (hash, revision, compacted) =
            self.services.kv.hash(at).await.map_err(status::status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(revision)),
            hash,
            compact_revision: compacted as i64,
        }))
    }

    /// etcd hashes its whole database file; coordinate's store is the history, so Hash is
    /// HashKV at the current revision.
    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision, _) = self.services.kv.hash(0).await.map_err(status::status)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.header(revision)),
            hash,
        }))
    }

    /// The backup as of now: every write acknowledged before the call is in it.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let data = self
            .services
            .status
            .backup()
            .await
            .map_err(status::status)?;
        let header = self.current_header();
        let sealed = crate::backup::seal(&data);
        let split = sealed.len() - crate::backup::DIGEST_LEN;
        let digest = sealed.slice(split..);
        let data = sealed.slice(..split);
        let total = data.len();
        let chunks = (0..total.div_ceil(SNAPSHOT_CHUNK)).map(move |i| {
            let end = ((i + 1) * SNAPSHOT_CHUNK).min(total);
            pb::SnapshotResponse {
                header: Some(header),
                remaining_bytes: (total - end) as u64,
                blob: data.slice(i * SNAPSHOT_CHUNK..end),
            }
        });
        let trailer = pb::SnapshotResponse {
            header: Some(header),
            remaining_bytes: 0,
            blob: digest,
        };
        let answers = chunks.chain(std::iter::once(trailer)).map(Ok);
        Ok(Response::new(Box::pin(futures_util::stream::iter(answers))))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.current_header()),
        }))
    }
}

fn alarm_type(kind: AlarmKind) -> pb::AlarmType {
    match kind {
        AlarmKind::NoSpace => pb::AlarmType::Nospace,
    }
}

/// An alarm as etcd's Status lists it in `errors`.
fn alarm_text(a: &Alarm) -> String {
    format!(
        "memberID:{} alarm:{}",
        a.member,
        alarm_type(a.kind).as_str_name()
    )
}
