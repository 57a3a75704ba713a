//! etcd's Cluster service over [`crate::service::MembersService`]: MemberList, MemberAdd
//! (as a voter or a learner; the new member's id is the next one after the highest, which
//! is what its `--id` must be), MemberRemove, MemberPromote, MemberUpdate (another peer URL;
//! the member is then restarted listening there). A member's name and client URLs are what it
//! published once it ran; like etcd's, a member not started yet has neither.

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::status;
use super::Grpc;
use crate::kv::MemberAttributes;
use crate::service::{
    AddMemberRequest, ListMembersResponse, MemberInfo, PromoteMemberRequest, RemoveMemberRequest,
    UpdateMemberRequest,
};

#[tonic::async_trait]
impl Cluster for Grpc {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = request.into_inner();
        let url = one_peer_url(&req.peer_ur_ls)?;
        let before = self.member_list().await?;
        let id = before.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
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
        let members = self.members().await?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .unwrap_or_else(|| pb::Member {
                id,
                peer_ur_ls: vec![url.clone()],
                is_learner: req.is_learner,
                ..pb::Member::default()
            });
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.current_header()),
            member: Some(member),
            members,
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
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let req = request.into_inner();
        let url = one_peer_url(&req.peer_ur_ls)?;
        let update = UpdateMemberRequest {
            id: req.id,
            peer_url: url.clone(),
        };
        self.services
            .members
            .update(update)
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.current_header()),
            members: self.members().await?,
        }))
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

/// The one peer URL of a request: a coordinate member has exactly one.
fn one_peer_url(urls: &[String]) -> Result<&String, Status> {
    match urls {
        [url] => Ok(url),
        _ => Err(Status::invalid_argument(
            "etcdserver: a coordinate member has exactly one peer URL",
        )),
    }
}

impl Grpc {
    async fn member_list(&self) -> Result<ListMembersResponse, Status> {
        self.services.members.list().await.map_err(status::status)
    }

    async fn members(&self) -> Result<Vec<pb::Member>, Status> {
        let list = self.member_list().await?;
        Ok(list
            .members
            .iter()
            .map(|m| self.member(m, list.attributes.get(&m.id)))
            .collect())
    }

    /// A member as etcd shows it: with what it published (this member: what it will).
    fn member(&self, m: &MemberInfo, published: Option<&MemberAttributes>) -> pb::Member {
        let attributes = match m.id == self.member {
            true => Some(&self.attributes),
            false => published,
        };
        pb::Member {
            id: m.id,
            name: attributes.map(|a| a.name.clone()).unwrap_or_default(),
            peer_ur_ls: vec![m.peer_url.clone()],
            client_ur_ls: attributes
                .map(|a| a.client_urls.clone())
                .unwrap_or_default(),
            is_learner: m.role == "learner",
        }
    }
}
