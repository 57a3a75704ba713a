//! etcd's Cluster service over [`crate::service::MembersService`]: MemberList, MemberAdd
//! (as a voter or a learner; the new member's id is the next one after the highest, which
//! is what its `--id` must be), MemberRemove, MemberPromote. A member's name is its id;
//! client URLs are known only for the answering member (coordinate does not replicate them).
//! MemberUpdate is refused: coordinate cannot move a member to another peer URL in place.

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::status;
use super::Grpc;
use crate::service::{AddMemberRequest, MemberInfo, PromoteMemberRequest, RemoveMemberRequest};

#[tonic::async_trait]
impl Cluster for Grpc {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = request.into_inner();
        let [url] = &req.peer_ur_ls[..] else {
            return Err(Status::invalid_argument(
                "etcdserver: a coordinate member has exactly one peer URL",
            ));
        };
        let before = self.member_list().await?;
        let id = before.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let add = AddMemberRequest {
            id,
            peer_url: url.clone(),
            learner: req.is_learner,
        };
        self.services
            .members
            .add(add)
            .await
            .map_err(status::status)?;
        let members = self.member_list().await?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .map(|m| self.member(m))
            .unwrap_or_else(|| pb::Member {
                id,
                name: id.to_string(),
                peer_ur_ls: vec![url.clone()],
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            });
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.current_header()),
            member: Some(member),
            members: members.iter().map(|m| self.member(m)).collect(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.services
            .members
            .remove(RemoveMemberRequest { id })
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.current_header()),
            members: self.members().await?,
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: coordinate cannot change a member's peer URL in place; remove the \
             member and add it again with the new URL",
        ))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.current_header()),
            members: self.members().await?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        self.services
            .members
            .promote(PromoteMemberRequest { id })
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.current_header()),
            members: self.members().await?,
        }))
    }
}

impl Grpc {
    async fn member_list(&self) -> Result<Vec<MemberInfo>, Status> {
        let list = self.services.members.list().await.map_err(status::status)?;
        Ok(list.members)
    }

    async fn members(&self) -> Result<Vec<pb::Member>, Status> {
        let list = self.member_list().await?;
        Ok(list.iter().map(|m| self.member(m)).collect())
    }

    /// A member as etcd shows it.
    fn member(&self, m: &MemberInfo) -> pb::Member {
        pb::Member {
            id: m.id,
            name: m.id.to_string(),
            peer_ur_ls: vec![m.peer_url.clone()],
            client_ur_ls: match m.id == self.member {
                true => vec![self.client_url.clone()],
                false => Vec::new(),
            },
            is_learner: m.role == "learner",
        }
    }
}
