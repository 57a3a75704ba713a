//! How a service error becomes a gRPC status: etcd's code and etcd's exact message, since etcd
//! clients match errors by their text (`rpctypes` in etcd's Go client). The one place this
//! mapping lives.

use tonic::{Code, Status};

use crate::kv::Refusal;
use crate::service::{MemberRefusal, Rejection, ServiceError, Unavailable};

pub(crate) const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub(crate) const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub(crate) const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub(crate) const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub(crate) const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
pub(crate) const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub(crate) const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub(crate) const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub(crate) const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
pub(crate) const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
pub(crate) const TIMEOUT: &str = "etcdserver: request timed out";
pub(crate) const STOPPED: &str = "etcdserver: server stopped";
pub(crate) const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
pub(crate) const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
pub(crate) const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
pub(crate) const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
pub(crate) const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
pub(crate) const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";

/// The status etcd answers for `e`.
pub(crate) fn status(e: ServiceError) -> Status {
    match e {
        ServiceError::Rejected(r) => rejected(r),
        ServiceError::Unavailable(u) => unavailable(u),
        ServiceError::Internal(i) => Status::internal(format!("etcdserver: {i}")),
    }
}

fn rejected(r: Rejection) -> Status {
    match r {
        Rejection::Refused(refusal) => refused(refusal),
        Rejection::Compacted { .. } => Status::out_of_range(COMPACTED),
        Rejection::Invalid(why) => Status::invalid_argument(format!("etcdserver: {why}")),
        Rejection::NotFound(why) => Status::not_found(format!("etcdserver: {why}")),
        Rejection::Conflict(why) | Rejection::Misdirected(why) => {
            Status::failed_precondition(format!("etcdserver: {why}"))
        }
        Rejection::Member(why, _) => member(why),
        r @ Rejection::PreconditionFailed { .. } => {
            Status::failed_precondition(format!("etcdserver: {r}"))
        }
    }
}

/// etcd's answer to a refused membership change (coordinate's own text says more, in REST).
fn member(why: MemberRefusal) -> Status {
    let (code, text) = match why {
        MemberRefusal::IdTaken => (Code::FailedPrecondition, MEMBER_EXISTS),
        MemberRefusal::PeerUrlTaken => (Code::FailedPrecondition, PEER_URL_EXISTS),
        MemberRefusal::NotMember => (Code::NotFound, MEMBER_NOT_FOUND),
        MemberRefusal::NotLearner => (Code::FailedPrecondition, NOT_LEARNER),
        MemberRefusal::LearnerBehind => (Code::FailedPrecondition, LEARNER_NOT_READY),
        MemberRefusal::QuorumAtRisk => (Code::FailedPrecondition, NOT_ENOUGH_STARTED),
    };
    Status::new(code, text)
}

fn refused(r: Refusal) -> Status {
    let (code, text) = match r {
        Refusal::LeaseNotFound(_) => (Code::NotFound, LEASE_NOT_FOUND),
        Refusal::LeaseExists(_) => (Code::FailedPrecondition, LEASE_EXISTS),
        Refusal::NoSpace => (Code::ResourceExhausted, NO_SPACE),
        Refusal::Compacted { .. } => (Code::OutOfRange, COMPACTED),
        Refusal::FutureRevision { .. } => (Code::OutOfRange, FUTURE_REV),
        Refusal::KeyNotFound => (Code::InvalidArgument, KEY_NOT_FOUND),
    };
    Status::new(code, text)
}

fn unavailable(u: Unavailable) -> Status {
    match u {
        Unavailable::NoLeader => Status::unavailable(NO_LEADER),
        Unavailable::Timeout | Unavailable::ReadTimeout => Status::unavailable(TIMEOUT),
        Unavailable::Shutdown | Unavailable::WatchHubClosed => Status::unavailable(STOPPED),
        u @ Unavailable::TooManyWatchers { .. } => {
            Status::resource_exhausted(format!("etcdserver: {u}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_etcds_codes_and_texts() {
        let cases = [
            (Refusal::LeaseNotFound(7), Code::NotFound, LEASE_NOT_FOUND),
            (
                Refusal::Compacted {
                    compact_revision: 3,
                },
                Code::OutOfRange,
                COMPACTED,
            ),
            (
                Refusal::FutureRevision { current: 3 },
                Code::OutOfRange,
                FUTURE_REV,
            ),
            (Refusal::NoSpace, Code::ResourceExhausted, NO_SPACE),
            (Refusal::KeyNotFound, Code::InvalidArgument, KEY_NOT_FOUND),
        ];
        for (refusal, code, text) in cases {
            let s = status(ServiceError::Rejected(Rejection::Refused(refusal)));
            assert_eq!((s.code(), s.message()), (code, text));
        }
        let s = status(ServiceError::Unavailable(Unavailable::NoLeader));
        assert_eq!((s.code(), s.message()), (Code::Unavailable, NO_LEADER));
    }

    #[test]
    fn membership_refusals_get_etcds_codes_and_texts() {
        let cases = [
            (
                MemberRefusal::IdTaken,
                Code::FailedPrecondition,
                MEMBER_EXISTS,
            ),
            (
                MemberRefusal::PeerUrlTaken,
                Code::FailedPrecondition,
                PEER_URL_EXISTS,
            ),
            (MemberRefusal::NotMember, Code::NotFound, MEMBER_NOT_FOUND),
            (
                MemberRefusal::NotLearner,
                Code::FailedPrecondition,
                NOT_LEARNER,
            ),
            (
                MemberRefusal::LearnerBehind,
                Code::FailedPrecondition,
                LEARNER_NOT_READY,
            ),
            (
                MemberRefusal::QuorumAtRisk,
                Code::FailedPrecondition,
                NOT_ENOUGH_STARTED,
            ),
        ];
        for (why, code, text) in cases {
            let refused = Rejection::Member(why, "coordinate's own words".into());
            let s = status(ServiceError::Rejected(refused));
            assert_eq!((s.code(), s.message()), (code, text));
        }
    }
}
