//! [`MembersService`]: the cluster's membership — list, add (voter or learner), promote a
//! learner, remove. A change returns once it is committed and applied on this node; the node
//! checks it against the configuration (etcd's strict reconfiguration) and refuses it with a
//! [`super::Rejection`] saying why.

use super::error::ServiceError;
use super::node::{MemberChange, MemberInfo, Raft};

/// Changes and lists the members through raft.
#[derive(Clone)]
pub struct MembersService {
    raft: Raft,
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

/// The members as this node knows them.
#[derive(Clone, Debug)]
pub struct ListMembersResponse {
    pub members: Vec<MemberInfo>,
}

impl MembersService {
    pub(super) fn new(raft: Raft) -> MembersService {
        MembersService { raft }
    }

    pub async fn list(&self) -> Result<ListMembersResponse, ServiceError> {
        let members = self.raft.members().await?;
        Ok(ListMembersResponse { members })
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
