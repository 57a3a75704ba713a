//! etcd's v3 gRPC API as Rust types: the messages of `etcdserverpb`, `mvccpb` and `authpb`,
//! the server traits coordinate implements (`kv_server::Kv`, `watch_server::Watch`, ...) and
//! the clients its tests and tools use. Generated at build time from `proto/`, definitions
//! written for the project from etcd's documented API (the wire is etcd's: package, service
//! and method names, field numbers and types). Every service method has a default answer,
//! `Unimplemented`, so a server implements what it serves.

#![allow(clippy::all, missing_docs)]

/// Keys, their versions and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// The auth types the API names.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The services and their messages.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
