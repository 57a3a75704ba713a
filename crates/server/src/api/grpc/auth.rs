//! etcd's Auth service, refused call by call with one clear message: coordinate has no users
//! or roles yet (the client port's TLS with client certificates is its access control).

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::auth_server::Auth;
use tonic::{Request, Response, Status};

use super::Grpc;

/// What every Auth call answers.
pub const AUTH_UNSUPPORTED: &str = "etcdserver: authentication (users and roles) is not \
    supported by coordinate yet; use TLS client certificates (--client-cert-auth) instead";

/// Implements each named Auth call as the same refusal.
macro_rules! refused {
    ($($call:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl Auth for Grpc {
            $(
                async fn $call(
                    &self,
                    _request: Request<pb::$req>,
                ) -> Result<Response<pb::$resp>, Status> {
                    Err(Status::unimplemented(AUTH_UNSUPPORTED))
                }
            )*
        }
    };
}

refused! {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse;
    auth_disable(AuthDisableRequest) -> AuthDisableResponse;
    auth_status(AuthStatusRequest) -> AuthStatusResponse;
    authenticate(AuthenticateRequest) -> AuthenticateResponse;
    user_add(AuthUserAddRequest) -> AuthUserAddResponse;
    user_get(AuthUserGetRequest) -> AuthUserGetResponse;
    user_list(AuthUserListRequest) -> AuthUserListResponse;
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
    role_list(AuthRoleListRequest) -> AuthRoleListResponse;
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
}
