//! Every typed call once, against a running node:
//! `cargo run -p coordinate-client --example tour -- 127.0.0.1:12380`.
//! Writes keys under `tour/` and deletes them again.

use std::time::Duration;

use bytes::Bytes;
use coordinate_client::{
    Client, CompareOp, Condition, Consistency, Error, ListOptions, Target, Txn, TxnOp,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints: Vec<String> = std::env::args()
        .skip(1)
        .map(|e| coordinate_client::parse_endpoint(&e))
        .collect::<Result<_, _>>()?;
    let mut c = Client::new(&endpoints, Duration::from_secs(10));

    let r1 = c
        .put("tour/a", Bytes::from("one"), Condition::IfAbsent)
        .await?;
    let got = c.get("tour/a", Consistency::Linearizable).await?;
    println!("put tour/a at {r1}; get: {got:?}");
    let r2 = c.cas("tour/a", Bytes::from("two"), r1).await?;
    match c.cas("tour/a", Bytes::from("three"), r1).await {
        Err(e @ Error::Refused { .. }) => println!("stale cas refused: {e}"),
        other => println!("stale cas: unexpected {other:?}"),
    }
    let mut watch = c.watch("tour/", true, r2).await?;
    let txn = Txn {
        compare: vec![("tour/a".into(), Target::ModRevision(r2), CompareOp::Eq)],
        success: vec![TxnOp::Put {
            key: "tour/b".into(),
            value: Bytes::from_static(&[0xff, 0xfe]),
        }],
        failure: vec![],
    };
    println!("txn: {:?}", c.txn(&txn).await?);
    for _ in 0..2 {
        println!("watch: {:?}", watch.next().await?);
    }
    let page = c.list("tour/", &ListOptions::default()).await?;
    println!("list: {page:?}");
    println!(
        "delete tour/a: {:?}",
        c.delete("tour/a", Condition::Always).await?
    );
    println!("delete tour/: {:?}", c.delete_prefix("tour/").await?);
    println!("members: {:?}", c.members().await?);
    let status = c.status().await?;
    println!(
        "status: id {} leader {} revision {}",
        status.id, status.leader, status.revision
    );
    Ok(())
}
