//! The ECS capacity provider API through the AWS SDK for Rust and the AWS CLI: creating,
//! describing (FARGATE and FARGATE_SPOT always there, names and ARNs, MISSING, tags, pages),
//! updating and deleting Auto Scaling group providers; PutClusterCapacityProviders and
//! CreateCluster with a default strategy, shown by DescribeClusters; the validation errors with
//! ECS's codes and messages; a provider associated with a cluster or used by a service cannot
//! be deleted or removed.
//!
//! Every test has its own `gantry dev`, so they run in parallel.

mod common;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::{
    AutoScalingGroupProvider, AutoScalingGroupProviderUpdate, CapacityProvider,
    CapacityProviderField, CapacityProviderStatus, CapacityProviderStrategyItem,
    CapacityProviderUpdateStatus, ManagedDraining, ManagedScaling, ManagedScalingStatus,
    ManagedTerminationProtection, Tag,
};
use aws_sdk_ecs::Client;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const NOT_FOUND: &str =
    "The specified capacity provider was not found. Specify a valid capacity provider and try again.";
const NOT_ASSOCIATED: &str = "The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.";
const MIXED: &str = "A capacity provider strategy cannot contain a mix of capacity providers using Auto Scaling groups and Fargate providers. Specify one or the other and try again.";
const TWO_BASES: &str =
    "Only one capacity provider in a capacity provider strategy can have a base defined.";
const IN_USE: &str = "The specified capacity provider is in use and cannot be removed.";
const EXISTS: &str = "The specified capacity provider already exists. To change the configuration of an existing capacity provider, update the capacity provider.";
const ASG_USED: &str = "The specified Auto Scaling group ARN is already being used by another capacity provider. Specify a unique Auto Scaling group ARN and try again.";
const BAD_NAME: &str = "The specified capacity provider name is invalid. Up to 255 characters are allowed, including letters (upper and lowercase), numbers, underscores, and hyphens. The name cannot be prefixed with \"aws\", \"ecs\", or \"fargate\". Specify a valid name and try again.";
const DOES_NOT_EXIST: &str =
    "The specified capacity provider does not exist. Specify a valid name or ARN and try again.";

fn asg_arn(group: &str) -> String {
    format!(
        "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:7b3f0c52-0c4e-4b5e-9a43-2f6d0e1a9c11:autoScalingGroupName/{group}"
    )
}

fn cluster_arn(name: &str) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:cluster/{name}")
}

fn cp_arn(name: &str) -> String {
    format!("arn:aws:ecs:us-east-1:000000000000:capacity-provider/{name}")
}

fn asg(group: &str) -> AutoScalingGroupProvider {
    AutoScalingGroupProvider::builder()
        .auto_scaling_group_arn(asg_arn(group))
        .build()
        .expect("AutoScalingGroupProvider")
}

fn item(provider: &str, base: Option<i32>, weight: Option<i32>) -> CapacityProviderStrategyItem {
    CapacityProviderStrategyItem::builder()
        .capacity_provider(provider)
        .set_base(base)
        .set_weight(weight)
        .build()
        .expect("CapacityProviderStrategyItem")
}

/// Assert that a call failed with the ECS error `code` and exactly `message`.
fn expect_error<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    message: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            assert_eq!(e.message(), Some(message), "{what}: wrong message: {e:?}");
        }
    }
}

/// Assert the error code only (for messages Gantry words itself).
fn expect_code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, E>,
    code: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected {code}, but the call succeeded: {v:#?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(code), "{what}: wrong error: {e:?}");
            assert!(
                e.message().is_some_and(|m| !m.is_empty()),
                "{what}: no message: {e:?}"
            );
        }
    }
}

async fn create_cp(c: &Client, name: &str, group: &str) -> CapacityProvider {
    c.create_capacity_provider()
        .name(name)
        .auto_scaling_group_provider(asg(group))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateCapacityProvider {name}: {e:?}"))
        .capacity_provider()
        .expect("capacityProvider")
        .clone()
}

async fn describe_one(c: &Client, name: &str) -> CapacityProvider {
    let d = c
        .describe_capacity_providers()
        .capacity_providers(name)
        .include(CapacityProviderField::Tags)
        .send()
        .await
        .expect("DescribeCapacityProviders");
    assert!(d.failures().is_empty(), "{d:#?}");
    assert_eq!(d.capacity_providers().len(), 1, "{d:#?}");
    d.capacity_providers()[0].clone()
}

/// Every provider DescribeCapacityProviders lists, page by page with `page_size`.
async fn list_all(c: &Client, page_size: Option<i32>) -> Vec<CapacityProvider> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let page = c
            .describe_capacity_providers()
            .set_max_results(page_size)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("DescribeCapacityProviders");
        if let Some(n) = page_size {
            assert!(page.capacity_providers().len() <= n as usize);
        }
        out.extend(page.capacity_providers().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
    panic!("DescribeCapacityProviders never ended its pages");
}

fn names(cps: &[CapacityProvider]) -> Vec<String> {
    cps.iter()
        .map(|c| c.name().unwrap_or_default().to_string())
        .collect()
}

async fn strategy_of(c: &Client, cluster: &str) -> (Vec<String>, Vec<(String, i32, i32)>) {
    let d = c
        .describe_clusters()
        .clusters(cluster)
        .send()
        .await
        .expect("DescribeClusters");
    let cl = &d.clusters()[0];
    (
        cl.capacity_providers().to_vec(),
        cl.default_capacity_provider_strategy()
            .iter()
            .map(|i| (i.capacity_provider().to_string(), i.base(), i.weight()))
            .collect(),
    )
}

async fn create_cluster(c: &Client, name: &str) {
    c.create_cluster()
        .cluster_name(name)
        .send()
        .await
        .expect("CreateCluster");
}

#[tokio::test]
async fn create_describe_update_delete_a_capacity_provider() {
    let dev = Dev::start().await;
    let c = &dev.client;

    // Create: AWS's defaults filled in, tags echoed.
    let created = c
        .create_capacity_provider()
        .name("cp-web")
        .auto_scaling_group_provider(asg("web-asg"))
        .tags(Tag::builder().key("team").value("web").build())
        .send()
        .await
        .expect("CreateCapacityProvider")
        .capacity_provider()
        .expect("capacityProvider")
        .clone();
    assert_eq!(
        created.capacity_provider_arn(),
        Some(cp_arn("cp-web").as_str())
    );
    assert_eq!(created.name(), Some("cp-web"));
    assert_eq!(created.status(), Some(&CapacityProviderStatus::Active));
    assert_eq!(
        created.update_status(),
        Some(&CapacityProviderUpdateStatus::CreateComplete)
    );
    let p = created.auto_scaling_group_provider().expect("provider");
    assert_eq!(p.auto_scaling_group_arn(), asg_arn("web-asg"));
    let ms = p.managed_scaling().expect("managedScaling");
    assert_eq!(ms.status(), Some(&ManagedScalingStatus::Disabled));
    assert_eq!(ms.target_capacity(), Some(100));
    assert_eq!(ms.minimum_scaling_step_size(), Some(1));
    assert_eq!(ms.maximum_scaling_step_size(), Some(10000));
    assert_eq!(ms.instance_warmup_period(), Some(300));
    assert_eq!(
        p.managed_termination_protection(),
        Some(&ManagedTerminationProtection::Disabled)
    );
    assert_eq!(p.managed_draining(), Some(&ManagedDraining::Enabled));
    assert_eq!(created.tags().len(), 1);

    // A partial managedScaling keeps AWS's defaults for the rest.
    let partial = c
        .create_capacity_provider()
        .name("cp-partial")
        .auto_scaling_group_provider(
            AutoScalingGroupProvider::builder()
                .auto_scaling_group_arn("partial-asg")
                .managed_scaling(
                    ManagedScaling::builder()
                        .status(ManagedScalingStatus::Enabled)
                        .minimum_scaling_step_size(2)
                        .build(),
                )
                .managed_draining(ManagedDraining::Disabled)
                .build()
                .expect("provider"),
        )
        .send()
        .await
        .expect("CreateCapacityProvider partial");
    let ms = partial
        .capacity_provider()
        .and_then(|c| c.auto_scaling_group_provider())
        .and_then(|p| p.managed_scaling())
        .expect("managedScaling");
    assert_eq!(ms.status(), Some(&ManagedScalingStatus::Enabled));
    assert_eq!(ms.target_capacity(), Some(100));
    assert_eq!(ms.minimum_scaling_step_size(), Some(2));
    assert_eq!(ms.maximum_scaling_step_size(), Some(10000));

    // Create errors: the same name, the same group (by name or ARN), bad names, bad values.
    expect_error(
        c.create_capacity_provider()
            .name("cp-web")
            .auto_scaling_group_provider(asg("other-asg"))
            .send()
            .await,
        "ClientException",
        EXISTS,
        "same name",
    );
    expect_error(
        c.create_capacity_provider()
            .name("cp-web-2")
            .auto_scaling_group_provider(
                AutoScalingGroupProvider::builder()
                    .auto_scaling_group_arn("web-asg")
                    .build()
                    .expect("provider"),
            )
            .send()
            .await,
        "ClientException",
        ASG_USED,
        "same Auto Scaling group",
    );
    for bad in [
        "FARGATE",
        "FARGATE_SPOT",
        "ecs-mine",
        "AWSome",
        "fargate-x",
        "has space",
    ] {
        expect_error(
            c.create_capacity_provider()
                .name(bad)
                .auto_scaling_group_provider(asg(&format!("asg-{}", bad.len())))
                .send()
                .await,
            "ClientException",
            BAD_NAME,
            bad,
        );
    }
    expect_code(
        c.create_capacity_provider()
            .name("cp-bad-target")
            .auto_scaling_group_provider(
                AutoScalingGroupProvider::builder()
                    .auto_scaling_group_arn(asg_arn("bad-target"))
                    .managed_scaling(ManagedScaling::builder().target_capacity(0).build())
                    .build()
                    .expect("provider"),
            )
            .send()
            .await,
        "InvalidParameterException",
        "targetCapacity 0",
    );
    expect_code(
        c.create_capacity_provider().name("cp-no-asg").send().await,
        "InvalidParameterException",
        "no autoScalingGroupProvider",
    );

    // Describe: everything (FARGATE and FARGATE_SPOT included, no tags unless asked), by
    // name, by ARN, unknown ones as MISSING.
    let all = list_all(c, None).await;
    let listed: BTreeSet<String> = names(&all).into_iter().collect();
    for n in ["cp-web", "cp-partial", "FARGATE", "FARGATE_SPOT"] {
        assert!(listed.contains(n), "{n} not listed: {listed:?}");
    }
    assert!(all.iter().all(|cp| cp.tags().is_empty()), "{all:#?}");
    let fargate = all
        .iter()
        .find(|cp| cp.name() == Some("FARGATE"))
        .expect("FARGATE");
    assert_eq!(
        fargate.capacity_provider_arn(),
        Some(cp_arn("FARGATE").as_str())
    );
    assert_eq!(fargate.status(), Some(&CapacityProviderStatus::Active));
    assert!(fargate.auto_scaling_group_provider().is_none());

    let d = c
        .describe_capacity_providers()
        .capacity_providers("cp-web")
        .capacity_providers(cp_arn("cp-partial"))
        .capacity_providers("FARGATE_SPOT")
        .capacity_providers("nope")
        .capacity_providers(cp_arn("nope-either"))
        .include(CapacityProviderField::Tags)
        .send()
        .await
        .expect("DescribeCapacityProviders by name");
    assert_eq!(
        names(d.capacity_providers()),
        ["cp-web", "cp-partial", "FARGATE_SPOT"]
    );
    assert_eq!(d.capacity_providers()[0].tags()[0].key(), Some("team"));
    let missing: Vec<(Option<&str>, Option<&str>)> =
        d.failures().iter().map(|f| (f.arn(), f.reason())).collect();
    assert_eq!(
        missing,
        [
            (Some(cp_arn("nope").as_str()), Some("MISSING")),
            (Some(cp_arn("nope-either").as_str()), Some("MISSING")),
        ]
    );

    // Pages of at most maxResults (1–10), each provider once.
    for i in 0..4 {
        create_cp(c, &format!("cp-page-{i}"), &format!("page-asg-{i}")).await;
    }
    let paged = list_all(c, Some(3)).await;
    let paged_names = names(&paged);
    let unique: BTreeSet<&String> = paged_names.iter().collect();
    assert_eq!(unique.len(), paged_names.len(), "{paged_names:?}");
    assert_eq!(paged_names.len(), 8, "{paged_names:?}");
    assert_eq!(paged_names, names(&list_all(c, None).await));
    expect_code(
        c.describe_capacity_providers().max_results(11).send().await,
        "InvalidParameterException",
        "maxResults 11",
    );

    // Update: the settings given change, the rest stays; at once UPDATE_COMPLETE.
    let updated = c
        .update_capacity_provider()
        .name("cp-web")
        .auto_scaling_group_provider(
            AutoScalingGroupProviderUpdate::builder()
                .managed_scaling(
                    ManagedScaling::builder()
                        .status(ManagedScalingStatus::Enabled)
                        .target_capacity(80)
                        .build(),
                )
                .managed_termination_protection(ManagedTerminationProtection::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("UpdateCapacityProvider")
        .capacity_provider()
        .expect("capacityProvider")
        .clone();
    assert_eq!(
        updated.update_status(),
        Some(&CapacityProviderUpdateStatus::UpdateComplete)
    );
    let described = describe_one(c, "cp-web").await;
    let p = described.auto_scaling_group_provider().expect("provider");
    let ms = p.managed_scaling().expect("managedScaling");
    assert_eq!(ms.status(), Some(&ManagedScalingStatus::Enabled));
    assert_eq!(ms.target_capacity(), Some(80));
    assert_eq!(ms.maximum_scaling_step_size(), Some(10000));
    assert_eq!(
        p.managed_termination_protection(),
        Some(&ManagedTerminationProtection::Enabled)
    );
    assert_eq!(p.managed_draining(), Some(&ManagedDraining::Enabled));
    expect_code(
        c.update_capacity_provider()
            .name("cp-web")
            .auto_scaling_group_provider(
                AutoScalingGroupProviderUpdate::builder()
                    .managed_scaling(ManagedScaling::builder().target_capacity(101).build())
                    .build(),
            )
            .send()
            .await,
        "InvalidParameterException",
        "targetCapacity 101",
    );
    expect_error(
        c.update_capacity_provider()
            .name("FARGATE")
            .auto_scaling_group_provider(AutoScalingGroupProviderUpdate::builder().build())
            .send()
            .await,
        "ClientException",
        "The FARGATE and FARGATE_SPOT capacity providers are reserved and can't be updated.",
        "update FARGATE",
    );
    expect_error(
        c.update_capacity_provider()
            .name("cp-nope")
            .auto_scaling_group_provider(AutoScalingGroupProviderUpdate::builder().build())
            .send()
            .await,
        "ClientException",
        DOES_NOT_EXIST,
        "update unknown",
    );

    // Delete: INACTIVE at once, still describable by name, gone from the list; the name and
    // the group can be used again.
    let deleted = c
        .delete_capacity_provider()
        .capacity_provider(cp_arn("cp-web"))
        .send()
        .await
        .expect("DeleteCapacityProvider")
        .capacity_provider()
        .expect("capacityProvider")
        .clone();
    assert_eq!(deleted.status(), Some(&CapacityProviderStatus::Inactive));
    assert_eq!(
        deleted.update_status(),
        Some(&CapacityProviderUpdateStatus::DeleteComplete)
    );
    assert_eq!(
        describe_one(c, "cp-web").await.status(),
        Some(&CapacityProviderStatus::Inactive)
    );
    assert!(!names(&list_all(c, None).await).contains(&"cp-web".to_string()));
    expect_error(
        c.delete_capacity_provider()
            .capacity_provider("cp-web")
            .send()
            .await,
        "ClientException",
        DOES_NOT_EXIST,
        "delete twice",
    );
    expect_error(
        c.delete_capacity_provider()
            .capacity_provider("FARGATE_SPOT")
            .send()
            .await,
        "ClientException",
        "The FARGATE and FARGATE_SPOT capacity providers are reserved and can't be deleted.",
        "delete FARGATE_SPOT",
    );
    let again = create_cp(c, "cp-web", "web-asg").await;
    assert_eq!(again.status(), Some(&CapacityProviderStatus::Active));
    assert!(again.tags().is_empty());
}

#[tokio::test]
async fn cluster_capacity_providers_and_their_validation() {
    let dev = Dev::start().await;
    let c = &dev.client;
    create_cluster(c, "cp-one").await;
    create_cluster(c, "cp-two").await;
    create_cp(c, "cp-ec2", "ec2-asg").await;
    create_cp(c, "cp-ec2-b", "ec2-asg-b").await;

    // An Auto Scaling group provider with a base: the answer and DescribeClusters agree.
    let out = c
        .put_cluster_capacity_providers()
        .cluster("cp-one")
        .capacity_providers("cp-ec2")
        .capacity_providers("cp-ec2-b")
        .default_capacity_provider_strategy(item("cp-ec2", Some(2), Some(1)))
        .default_capacity_provider_strategy(item("cp-ec2-b", None, Some(3)))
        .send()
        .await
        .expect("PutClusterCapacityProviders");
    let cl = out.cluster().expect("cluster");
    assert_eq!(cl.cluster_name(), Some("cp-one"));
    assert_eq!(cl.status(), Some("ACTIVE"));
    assert_eq!(cl.capacity_providers(), ["cp-ec2", "cp-ec2-b"]);
    let expected = vec![("cp-ec2".to_string(), 2, 1), ("cp-ec2-b".to_string(), 0, 3)];
    let answered: Vec<(String, i32, i32)> = cl
        .default_capacity_provider_strategy()
        .iter()
        .map(|i| (i.capacity_provider().to_string(), i.base(), i.weight()))
        .collect();
    assert_eq!(answered, expected);
    assert_eq!(
        strategy_of(c, &cluster_arn("cp-one")).await,
        (
            vec!["cp-ec2".to_string(), "cp-ec2-b".to_string()],
            expected.clone()
        )
    );

    // Fargate, weight left out: echoed as 0, base as 0.
    c.put_cluster_capacity_providers()
        .cluster("cp-two")
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .default_capacity_provider_strategy(item("FARGATE", Some(1), Some(1)))
        .default_capacity_provider_strategy(item("FARGATE_SPOT", None, None))
        .send()
        .await
        .expect("PutClusterCapacityProviders Fargate");
    assert_eq!(
        strategy_of(c, "cp-two").await.1,
        [
            ("FARGATE".to_string(), 1, 1),
            ("FARGATE_SPOT".to_string(), 0, 0)
        ]
    );

    // DescribeCapacityProviders for one cluster: only its providers.
    let d = c
        .describe_capacity_providers()
        .cluster("cp-one")
        .send()
        .await
        .expect("DescribeCapacityProviders cluster");
    assert_eq!(names(d.capacity_providers()), ["cp-ec2", "cp-ec2-b"]);

    // The validation, with ECS's codes and messages; nothing changes on a refusal.
    let put = |providers: &[&str], strategy: Vec<CapacityProviderStrategyItem>| {
        c.put_cluster_capacity_providers()
            .cluster("cp-two")
            .set_capacity_providers(Some(providers.iter().map(|p| p.to_string()).collect()))
            .set_default_capacity_provider_strategy(Some(strategy))
            .send()
    };
    expect_error(
        put(&["FARGATE", "cp-nope"], vec![]).await,
        "InvalidParameterException",
        NOT_FOUND,
        "unknown provider",
    );
    expect_error(
        put(&["FARGATE"], vec![item("FARGATE_SPOT", None, Some(1))]).await,
        "InvalidParameterException",
        NOT_ASSOCIATED,
        "strategy outside the list",
    );
    expect_error(
        put(
            &["FARGATE", "FARGATE_SPOT"],
            vec![
                item("FARGATE", Some(1), Some(1)),
                item("FARGATE_SPOT", Some(2), Some(1)),
            ],
        )
        .await,
        "InvalidParameterException",
        TWO_BASES,
        "two bases",
    );
    create_cp(c, "cp-mix", "mix-asg").await;
    expect_error(
        put(
            &["FARGATE", "cp-mix"],
            vec![
                item("FARGATE", None, Some(1)),
                item("cp-mix", None, Some(1)),
            ],
        )
        .await,
        "InvalidParameterException",
        MIXED,
        "Fargate and Auto Scaling group mixed",
    );
    expect_code(
        put(&["FARGATE"], vec![item("FARGATE", None, Some(1001))]).await,
        "InvalidParameterException",
        "weight 1001",
    );
    expect_code(
        put(&["FARGATE"], vec![item("FARGATE", Some(100_001), Some(1))]).await,
        "InvalidParameterException",
        "base 100001",
    );
    expect_code(
        put(&["cp-ec2"], vec![]).await,
        "InvalidParameterException",
        "an Auto Scaling group provider of another cluster",
    );
    expect_code(
        c.put_cluster_capacity_providers()
            .cluster("cp-nowhere")
            .capacity_providers("FARGATE")
            .set_default_capacity_provider_strategy(Some(vec![]))
            .send()
            .await,
        "ClusterNotFoundException",
        "unknown cluster",
    );
    assert_eq!(
        strategy_of(c, "cp-two").await.0,
        ["FARGATE".to_string(), "FARGATE_SPOT".to_string()]
    );

    // CreateCluster applies the same rules and records the same shape.
    let created = c
        .create_cluster()
        .cluster_name("cp-three")
        .capacity_providers("FARGATE_SPOT")
        .default_capacity_provider_strategy(item("FARGATE_SPOT", None, Some(2)))
        .send()
        .await
        .expect("CreateCluster with providers");
    assert_eq!(
        created.cluster().map(|c| c.capacity_providers().to_vec()),
        Some(vec!["FARGATE_SPOT".to_string()])
    );
    assert_eq!(
        strategy_of(c, "cp-three").await.1,
        [("FARGATE_SPOT".to_string(), 0, 2)]
    );
    expect_error(
        c.create_cluster()
            .cluster_name("cp-four")
            .capacity_providers("FARGATE")
            .default_capacity_provider_strategy(item("cp-mix", None, Some(1)))
            .send()
            .await,
        "InvalidParameterException",
        NOT_ASSOCIATED,
        "CreateCluster strategy outside the list",
    );
    expect_error(
        c.create_cluster()
            .cluster_name("cp-four")
            .capacity_providers("cp-ec2")
            .send()
            .await,
        "InvalidParameterException",
        "The specified capacity provider 'cp-ec2' is already associated with cluster 'cp-one'. An Auto Scaling group capacity provider can be associated with one cluster only; remove it from that cluster and try again.",
        "CreateCluster with another cluster's provider",
    );
    let four = c
        .describe_clusters()
        .clusters("cp-four")
        .send()
        .await
        .expect("DescribeClusters");
    assert_eq!(
        four.failures().len(),
        1,
        "a refused CreateCluster wrote: {four:#?}"
    );

    // Deleting an associated provider is not an error on AWS: DELETE_FAILED and why.
    let refused = c
        .delete_capacity_provider()
        .capacity_provider("cp-ec2")
        .send()
        .await
        .expect("DeleteCapacityProvider while associated")
        .capacity_provider()
        .expect("capacityProvider")
        .clone();
    assert_eq!(refused.status(), Some(&CapacityProviderStatus::Active));
    assert_eq!(
        refused.update_status(),
        Some(&CapacityProviderUpdateStatus::DeleteFailed)
    );
    assert_eq!(
        refused.update_status_reason(),
        Some("The capacity provider cannot be deleted because it is associated with cluster: cp-one. Remove the capacity provider from the cluster and try again.")
    );
    let shown = describe_one(c, "cp-ec2").await;
    assert_eq!(shown.status(), Some(&CapacityProviderStatus::Active));
    assert_eq!(
        shown.update_status(),
        Some(&CapacityProviderUpdateStatus::DeleteFailed)
    );

    // Removed from the cluster, it can be deleted; the cluster keeps the other one.
    c.put_cluster_capacity_providers()
        .cluster(cluster_arn("cp-one"))
        .capacity_providers("cp-ec2-b")
        .set_default_capacity_provider_strategy(Some(vec![]))
        .send()
        .await
        .expect("PutClusterCapacityProviders removing cp-ec2");
    assert_eq!(
        strategy_of(c, "cp-one").await,
        (vec!["cp-ec2-b".to_string()], vec![])
    );
    let gone = c
        .delete_capacity_provider()
        .capacity_provider("cp-ec2")
        .send()
        .await
        .expect("DeleteCapacityProvider");
    assert_eq!(
        gone.capacity_provider().and_then(|c| c.status()),
        Some(&CapacityProviderStatus::Inactive)
    );

    // Deleting the cluster frees its Auto Scaling group provider for another cluster.
    c.delete_cluster()
        .cluster("cp-one")
        .send()
        .await
        .expect("DeleteCluster with a capacity provider");
    c.put_cluster_capacity_providers()
        .cluster("cp-two")
        .capacity_providers("cp-ec2-b")
        .set_default_capacity_provider_strategy(Some(vec![]))
        .send()
        .await
        .expect("cp-ec2-b is free again");
}

#[tokio::test]
async fn a_provider_a_service_uses_cannot_be_removed_or_deleted() {
    let dev = Dev::start().await;
    let c = &dev.client;
    let cluster = dev.cluster.clone();
    create_cp(c, "cp-svc", "svc-asg").await;
    c.put_cluster_capacity_providers()
        .cluster(&cluster)
        .capacity_providers("cp-svc")
        .set_default_capacity_provider_strategy(Some(vec![]))
        .send()
        .await
        .expect("PutClusterCapacityProviders");
    let td = register(
        c,
        &unique("cp-svc"),
        vec![busybox_container("app", &["sleep", "3600"])],
    )
    .await;
    c.create_service()
        .cluster(&cluster)
        .service_name("uses-cp")
        .task_definition(&td)
        .desired_count(0)
        .capacity_provider_strategy(item("cp-svc", None, Some(1)))
        .send()
        .await
        .expect("CreateService with a capacity provider strategy");

    expect_error(
        c.put_cluster_capacity_providers()
            .cluster(&cluster)
            .set_capacity_providers(Some(vec![]))
            .set_default_capacity_provider_strategy(Some(vec![]))
            .send()
            .await,
        "ResourceInUseException",
        IN_USE,
        "removing a provider a service uses",
    );
    let refused = c
        .delete_capacity_provider()
        .capacity_provider("cp-svc")
        .send()
        .await
        .expect("DeleteCapacityProvider");
    assert_eq!(
        refused.capacity_provider().and_then(|p| p.update_status()),
        Some(&CapacityProviderUpdateStatus::DeleteFailed)
    );

    // Once the service is gone, the provider can be removed.
    c.delete_service()
        .cluster(&cluster)
        .service("uses-cp")
        .force(true)
        .send()
        .await
        .expect("DeleteService");
    eventually(
        Duration::from_secs(60),
        "the provider to be removable",
        || async {
            c.put_cluster_capacity_providers()
                .cluster(&cluster)
                .set_capacity_providers(Some(vec![]))
                .set_default_capacity_provider_strategy(Some(vec![]))
                .send()
                .await
                .ok()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_aws_cli_describes_capacity_providers() {
    let dev = Dev::start().await;
    let aws = Aws::new(&dev);
    let created = aws
        .ok(&[
            "ecs",
            "create-capacity-provider",
            "--name",
            "cli-cp",
            "--auto-scaling-group-provider",
            &format!(
                "autoScalingGroupArn={},managedScaling={{status=ENABLED,targetCapacity=90}},managedTerminationProtection=DISABLED",
                asg_arn("cli-asg")
            ),
            "--tags",
            "key=env,value=dev",
        ])
        .await;
    assert_eq!(created["capacityProvider"]["status"], "ACTIVE");
    assert_eq!(
        created["capacityProvider"]["autoScalingGroupProvider"]["managedScaling"]
            ["instanceWarmupPeriod"],
        300
    );

    let all = aws.ok(&["ecs", "describe-capacity-providers"]).await;
    let listed: BTreeSet<&str> = all["capacityProviders"]
        .as_array()
        .expect("capacityProviders")
        .iter()
        .filter_map(|cp| cp["name"].as_str())
        .collect();
    assert!(
        ["cli-cp", "FARGATE", "FARGATE_SPOT"]
            .iter()
            .all(|n| listed.contains(n)),
        "{all:#}"
    );
    assert!(all["capacityProviders"][0].get("tags").is_none(), "{all:#}");

    let one = aws
        .ok(&[
            "ecs",
            "describe-capacity-providers",
            "--capacity-providers",
            "cli-cp",
            "missing-cp",
            "--include",
            "TAGS",
        ])
        .await;
    assert_eq!(one["capacityProviders"][0]["name"], "cli-cp");
    assert_eq!(
        one["capacityProviders"][0]["capacityProviderArn"],
        Value::String(cp_arn("cli-cp"))
    );
    assert_eq!(
        one["capacityProviders"][0]["tags"],
        serde_json::json!([{"key": "env", "value": "dev"}])
    );
    assert_eq!(one["failures"][0]["reason"], "MISSING");
    assert_eq!(
        one["failures"][0]["arn"],
        Value::String(cp_arn("missing-cp"))
    );

    let put = aws
        .ok(&[
            "ecs",
            "put-cluster-capacity-providers",
            "--cluster",
            &dev.cluster,
            "--capacity-providers",
            "FARGATE",
            "FARGATE_SPOT",
            "--default-capacity-provider-strategy",
            "capacityProvider=FARGATE,base=1,weight=1",
            "capacityProvider=FARGATE_SPOT,weight=4",
        ])
        .await;
    assert_eq!(
        put["cluster"]["defaultCapacityProviderStrategy"],
        serde_json::json!([
            {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 4, "base": 0}
        ])
    );
    let bad = aws
        .run(&[
            "ecs",
            "put-cluster-capacity-providers",
            "--cluster",
            &dev.cluster,
            "--capacity-providers",
            "FARGATE",
            "--default-capacity-provider-strategy",
            "capacityProvider=cli-cp,weight=1",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("InvalidParameterException") && bad.stderr.contains(NOT_ASSOCIATED),
        "{}",
        bad.stderr
    );
}
