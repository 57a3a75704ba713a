//! [`MembersService`]: the cluster's membership — list, add (voter or learner), promote a
//! learner, remove, move to another peer URL — and what each member publishes about itself
//! (name, client URLs) once it runs, as etcd's members do. A change returns once it is
//! committed and applied on this node; the node checks it against the configuration (etcd's
//! strict reconfiguration) and refuses it with a [`super::Rejection`] saying why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::error::ServiceError;
use super::kv::unexpected_read;
use super::node::{Consistency, MemberChange, MemberInfo, Query, Raft, ReadResult};
use crate::kv::{Command, MemberAttributes, Outcome};

/// How long a member waits between attempts to publish its attributes.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

/// Changes and lists the members through raft.
#[derive(Clone)]
pub struct MembersService {
    raft: Raft,
    /// This node's member id.
    member: u64,
    /// The cluster's id (the state machine keeps it current).
    cluster: Arc<AtomicU64>,
}

/// Add node `id`, reachable at `peer_url` (already in canonical form), as a voter or a
/// non-voting learner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddMemberRequest {
    pub id: u64,
    pub peer_url: String,
    pub learner: bool,
}

/// The addition was applied on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddMemberResponse;

/// Remove node `id`; it shuts itself down once it applies its removal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveMemberRequest {
    pub id: u64,
}

/// The removal was applied on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoveMemberResponse;

/// Make the caught-up learner `id` a voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromoteMemberRequest {
    pub id: u64,
}

/// The promotion was applied on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromoteMemberResponse;

/// Move member `id` to `peer_url` (already in canonical form); it keeps its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateMemberRequest {
    pub id: u64,
    pub peer_url: String,
}

/// The members as this node knows them.
#[derive(Clone, Debug)]
pub struct ListMembersResponse {
    pub members: Vec<MemberInfo>,
    /// What each member published about itself; a member not started yet (or running a
    /// build that does not publish) is absent.
    pub attributes: BTreeMap<u64, MemberAttributes>,
}

impl MembersService {
    pub(super) fn new(raft: Raft, member: u64, cluster: Arc<AtomicU64>) -> MembersService {
        MembersService {
            raft,
            member,
            cluster,
        }
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster.load(Ordering::Relaxed)
    }

    /// The members as this node has applied them (no quorum round, like the raft list).
    pub async fn list(&self) -> Result<ListMembersResponse, ServiceError> {
        let members = self.raft.members().await?;
        let attributes = match self
            .raft
            .read(Query::Members, Consistency::Serializable)
            .await?
        {
            ReadResult::Members(attributes) => attributes,
            other => return Err(unexpected_read("a member attribute read", other)),
        };
        Ok(ListMembersResponse {
            members,
            attributes,
        })
    }

    pub async fn update(&self, req: UpdateMemberRequest) -> Result<(), ServiceError> {
        let change = MemberChange::Update {
            id: req.id,
            url: req.peer_url,
        };
        self.raft.change_members(change).await
    }

    /// Publishes this member's attributes, retrying until the cluster has applied them: once
    /// a leader is known and this node is a member (a `--join` node waits to be added). It
    /// publishes at every start, even with the same attributes, so that a member running a
    /// build that skipped an earlier publication (a rolling upgrade) learns them too.
    pub async fn publish(self, attributes: MemberAttributes) {
        loop {
            match self.try_publish(&attributes).await {
                Ok(true) => {
                    tracing::info!(name = %attributes.name, client_urls = ?attributes.client_urls, "published this member's attributes");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "publishing this member's attributes; retrying")
                }
            }
            tokio::time::sleep(PUBLISH_RETRY).await;
        }
    }

    /// One attempt: true once the cluster has applied `attributes` for this member.
    async fn try_publish(&self, attributes: &MemberAttributes) -> Result<bool, ServiceError> {
        let members = self.raft.members().await?;
        if !members.iter().any(|m| m.id == self.member) || self.raft.leader() == 0 {
            return Ok(false);
        }
        let cmd = Command::PublishMember {
            id: self.member,
            attributes: attributes.clone(),
        };
        match self.raft.propose(&cmd).await? {
            Outcome::MemberPublished { member } => Ok(member),
            other => Err(super::kv::unexpected("a member publication", other)),
        }
    }

    pub async fn add(&self, req: AddMemberRequest) -> Result<AddMemberResponse, ServiceError> {
        let change = MemberChange::Add {
            id: req.id,
            url: req.peer_url,
            learner: req.learner,
        };
        self.raft.change_members(change).await?;
        Ok(AddMemberResponse)
    }

    pub async fn remove(
        &self,
        req: RemoveMemberRequest,
    ) -> Result<RemoveMemberResponse, ServiceError> {
        let change = MemberChange::Remove { id: req.id };
        self.raft.change_members(change).await?;
        Ok(RemoveMemberResponse)
    }

    pub async fn promote(
        &self,
        req: PromoteMemberRequest,
    ) -> Result<PromoteMemberResponse, ServiceError> {
        let change = MemberChange::Promote { id: req.id };
        self.raft.change_members(change).await?;
        Ok(PromoteMemberResponse)
    }
}
