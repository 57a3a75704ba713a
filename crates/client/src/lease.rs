//! Typed calls of `/v1/lease`, `/v1/compact` and `/v1/alarms`, and of the `/v1/kv` reads and
//! writes that go with leases: reads at a revision, range reads ([`RangeOptions`]) and puts
//! attached to a lease.
//!
//! A lease that is gone (expired or revoked) is an answer, not an error, where a caller
//! must act on it: [`Client::keep_alive`] and [`Client::time_to_live`] return `None`.

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{Condition, Consistency, RangeOptions};
use crate::client::{decode, invalid, Client, GetResponse, KeyValue, RangeBody};
use crate::conn::Request;
use crate::error::Error;
use crate::DeleteResponse;

/// A lease was granted: its id and the TTL it got (seconds; the server's minimum is 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct LeaseGrant {
    pub id: i64,
    pub ttl: i64,
}

/// A lease as it is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TimeToLive {
    pub id: i64,
    /// Seconds left, on the answering node's clock.
    pub ttl: i64,
    pub granted_ttl: i64,
    /// The keys attached (only when asked for).
    #[serde(default)]
    pub keys: Vec<String>,
    pub revision: u64,
}

/// Every lease's id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LeaseList {
    pub leases: Vec<i64>,
    pub revision: u64,
}

/// An alarm a member raised (`NOSPACE`: the store is above its quota).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Alarm {
    pub member: u64,
    pub alarm: String,
}

/// The alarms raised.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AlarmList {
    pub alarms: Vec<Alarm>,
    #[serde(default)]
    pub revision: u64,
}

/// A range read's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Empty with `count_only`.
    pub kvs: Vec<KeyValue>,
    /// True if keys follow.
    pub more: bool,
    /// The number of keys in the range (only with `count_only`).
    pub count: Option<u64>,
    pub revision: u64,
}

impl Client {
    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one).
    pub async fn grant_lease(&mut self, ttl: i64, id: i64) -> Result<LeaseGrant, Error> {
        let req = Request::lease_grant(ttl, id);
        let (endpoint, r) = self.expect("grant lease", &req, &[StatusCode::OK]).await?;
        decode("grant lease", &endpoint, &r)
    }

    /// Revokes a lease, deleting its keys in one revision. A lease that does not exist is
    /// [`Error::Refused`] with status 404.
    pub async fn revoke_lease(&mut self, id: i64) -> Result<DeleteResponse, Error> {
        #[derive(Deserialize)]
        struct Answer {
            deleted: u64,
            revision: u64,
        }
        let what = format!("revoke lease {id}");
        let req = Request::lease_revoke(id);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::OK]).await?;
        let a: Answer = decode(&what, &endpoint, &r)?;
        Ok(DeleteResponse {
            deleted: a.deleted,
            revision: a.revision,
        })
    }

    /// Restarts a lease's TTL; the TTL (seconds), or `None` if the lease is gone.
    pub async fn keep_alive(&mut self, id: i64) -> Result<Option<i64>, Error> {
        let what = format!("keep lease {id} alive");
        let req = Request::lease_keep_alive(id);
        let want = [StatusCode::OK, StatusCode::NOT_FOUND];
        let (endpoint, r) = self.expect(&what, &req, &want).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = decode(&what, &endpoint, &r)?;
        body["ttl"]
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(&what, &endpoint, "no ttl"))
    }

    /// A lease's time left, granted TTL and (if `keys`) keys; `None` if it is gone.
    pub async fn time_to_live(&mut self, id: i64, keys: bool) -> Result<Option<TimeToLive>, Error> {
        let what = format!("lease {id}");
        let req = Request::lease_time_to_live(id, keys);
        let want = [StatusCode::OK, StatusCode::NOT_FOUND];
        let (endpoint, r) = self.expect(&what, &req, &want).await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode(&what, &endpoint, &r).map(Some)
    }

    /// Every lease's id.
    pub async fn leases(&mut self) -> Result<LeaseList, Error> {
        let (endpoint, r) = self
            .expect("list leases", &Request::lease_list(), &[StatusCode::OK])
            .await?;
        decode("list leases", &endpoint, &r)
    }

    /// Forgets every revision before `revision`; the compaction point.
    pub async fn compact(&mut self, revision: u64) -> Result<u64, Error> {
        let what = format!("compact to {revision}");
        let req = Request::compact(revision);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::OK]).await?;
        let body: Value = decode(&what, &endpoint, &r)?;
        body["compact_revision"]
            .as_u64()
            .ok_or_else(|| invalid(&what, &endpoint, "no compact_revision"))
    }

    /// The alarms raised.
    pub async fn alarms(&mut self) -> Result<AlarmList, Error> {
        let (endpoint, r) = self
            .expect("alarms", &Request::alarms(), &[StatusCode::OK])
            .await?;
        decode("alarms", &endpoint, &r)
    }

    /// Disarms NOSPACE; the alarms left.
    pub async fn disarm(&mut self) -> Result<Vec<Alarm>, Error> {
        let (endpoint, r) = self
            .expect("disarm", &Request::alarms_disarm(), &[StatusCode::OK])
            .await?;
        let list: AlarmList = decode("disarm", &endpoint, &r)?;
        Ok(list.alarms)
    }

    /// A key's value as it was at `revision` (0: now); `None` if it did not exist then.
    /// A compacted revision is [`Error::Refused`] with status 410.
    pub async fn get_at(
        &mut self,
        key: &str,
        consistency: Consistency,
        revision: u64,
    ) -> Result<Option<GetResponse>, Error> {
        let req = Request::kv_get_at(key, consistency, revision);
        self.get_request(key, &req).await
    }

    /// Writes `value` attached to lease `lease` if `condition` holds; the new revision. A
    /// lease that does not exist is [`Error::Refused`] with status 404.
    pub async fn put_with_lease(
        &mut self,
        key: &str,
        value: Bytes,
        condition: Condition,
        lease: i64,
    ) -> Result<u64, Error> {
        let req = Request::kv_put_with_lease(key, value, condition, lease);
        self.put_request(key, &req).await
    }

    /// A range read from `key` (see [`RangeOptions`]).
    pub async fn range(
        &mut self,
        key: &str,
        options: &RangeOptions,
    ) -> Result<RangeResponse, Error> {
        let what = format!("range {key:?}");
        let req = Request::kv_range(key, options);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::OK]).await?;
        let body: RangeBody = decode(&what, &endpoint, &r)?;
        let (more, count, revision) = (body.more, body.count, body.revision);
        Ok(RangeResponse {
            kvs: body.kvs(&what, &endpoint)?,
            more,
            count,
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_answers_decode() {
        let t: TimeToLive = serde_json::from_str(
            r#"{"granted_ttl":60,"id":7587,"keys":["service/web-1"],"revision":1,"ttl":59}"#,
        )
        .unwrap();
        assert_eq!((t.id, t.ttl, t.granted_ttl), (7587, 59, 60));
        assert_eq!(t.keys, vec!["service/web-1"]);
        // Without ?keys=true there are none.
        let t: TimeToLive =
            serde_json::from_str(r#"{"granted_ttl":60,"id":1,"revision":1,"ttl":59}"#).unwrap();
        assert!(t.keys.is_empty());
        let l: LeaseList = serde_json::from_str(r#"{"leases":[1,2],"revision":4}"#).unwrap();
        assert_eq!(l.leases, vec![1, 2]);
        let a: AlarmList =
            serde_json::from_str(r#"{"alarms":[{"member":2,"alarm":"NOSPACE"}],"revision":4}"#)
                .unwrap();
        assert_eq!(a.alarms[0].alarm, "NOSPACE");
        // DELETE /v1/alarms answers the alarms left, without a revision.
        let a: AlarmList = serde_json::from_str(r#"{"alarms":[]}"#).unwrap();
        assert!(a.alarms.is_empty());
    }
}
