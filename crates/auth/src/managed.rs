//! The AWS managed policies that ECS users attach, so that `arn:aws:iam::aws:policy/...` ARNs in
//! their Terraform, CloudFormation and CLI scripts resolve in Gantry as they do in AWS.
//!
//! The documents are AWS's own, as published by IAM (the default version named in
//! `version_id`, as of early 2026), with statements reordered to IAM's usual key order. They are
//! kept whole, even where they name services Gantry does not implement: those actions are never
//! requested, so they grant nothing, and keeping them whole keeps the documents recognisable.
//! The exception is `ReadOnlyAccess`, whose thousands of actions are trimmed to the services
//! Gantry implements (ecs, ecr, ec2, elasticloadbalancing, application-autoscaling, iam, logs,
//! secretsmanager, servicediscovery, ssm, sts).
//!
//! Every document parses as an identity policy; the tests check it.

/// An AWS managed policy: `arn:aws:iam::aws:policy{path}{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedPolicy {
    pub name: &'static str,
    pub path: &'static str,
    pub description: &'static str,
    /// The policy version AWS marks as default (what GetPolicy reports as DefaultVersionId).
    pub version_id: &'static str,
    /// The policy document, as JSON.
    pub document: &'static str,
}

impl ManagedPolicy {
    pub fn arn(&self) -> String {
        format!("arn:aws:iam::aws:policy{}{}", self.path, self.name)
    }
}

/// Every AWS managed policy Gantry knows.
pub fn aws_managed() -> &'static [ManagedPolicy] {
    &POLICIES
}

/// The managed policy with this ARN (`arn:aws:iam::aws:policy/service-role/...`), matched
/// exactly as IAM does: name and path are case-sensitive.
pub fn find(arn: &str) -> Option<&'static ManagedPolicy> {
    let rest = arn.strip_prefix("arn:aws:iam::aws:policy")?;
    POLICIES
        .iter()
        .find(|p| rest.strip_prefix(p.path) == Some(p.name))
}

static POLICIES: [ManagedPolicy; 17] = [
    ManagedPolicy {
        name: "AdministratorAccess",
        path: "/",
        description: "Provides full access to AWS services and resources.",
        version_id: "v1",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "*",
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "PowerUserAccess",
        path: "/",
        description: "Provides full access to AWS services and resources, but does not allow management of Users and groups.",
        version_id: "v12",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "NotAction": [
        "iam:*",
        "organizations:*",
        "account:*"
      ],
      "Resource": "*"
    },
    {
      "Effect": "Allow",
      "Action": [
        "account:GetAccountInformation",
        "account:GetGovCloudAccountInformation",
        "account:GetPrimaryEmail",
        "account:ListRegions",
        "iam:CreateServiceLinkedRole",
        "iam:DeleteServiceLinkedRole",
        "iam:ListRoles",
        "organizations:DescribeEffectivePolicy",
        "organizations:DescribeOrganization"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    // Trimmed: AWS's v178 lists about 2,700 actions over every service; kept are those of the
    // services Gantry implements, in AWS's order and statements.
    ManagedPolicy {
        name: "ReadOnlyAccess",
        path: "/",
        description: "Provides read-only access to AWS services and resources.",
        version_id: "v178",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ReadOnlyActionsGroup1",
      "Effect": "Allow",
      "Action": [
        "application-autoscaling:Describe*",
        "application-autoscaling:GetPredictiveScalingForecast",
        "application-autoscaling:ListTagsForResource",
        "ec2:Describe*",
        "ec2:DescribeInstanceImageMetadata",
        "ec2:Get*",
        "ec2:ListImagesInRecycleBin",
        "ec2:ListSnapshotsInRecycleBin",
        "ec2:SearchLocalGatewayRoutes",
        "ec2:SearchTransitGatewayRoutes",
        "ecr:BatchCheck*",
        "ecr:BatchGet*",
        "ecr:Describe*",
        "ecr:Get*",
        "ecr:List*",
        "ecs:Describe*",
        "ecs:List*",
        "elasticloadbalancing:Describe*",
        "iam:Generate*",
        "iam:Get*",
        "iam:List*",
        "iam:Simulate*"
      ],
      "Resource": "*"
    },
    {
      "Sid": "ReadOnlyActionsGroup2",
      "Effect": "Allow",
      "Action": [
        "logs:Describe*",
        "logs:FilterLogEvents",
        "logs:Get*",
        "logs:ListAnomalies",
        "logs:ListEntitiesForLogGroup",
        "logs:ListIntegrations",
        "logs:ListLogAnomalyDetectors",
        "logs:ListLogDeliveries",
        "logs:ListLogGroupsForEntity",
        "logs:ListLogGroupsForQuery",
        "logs:ListTagsForResource",
        "logs:ListTagsLogGroup",
        "logs:StartLiveTail",
        "logs:StartQuery",
        "logs:StopLiveTail",
        "logs:StopQuery",
        "logs:TestMetricFilter",
        "logs:ListAggregateLogGroupSummaries",
        "logs:ListSourcesForS3TableIntegration",
        "logs:ListScheduledQueries",
        "secretsmanager:Describe*",
        "secretsmanager:GetResourcePolicy",
        "secretsmanager:List*",
        "servicediscovery:DiscoverInstances",
        "servicediscovery:DiscoverInstancesRevision",
        "servicediscovery:Get*",
        "servicediscovery:List*",
        "ssm:Describe*",
        "ssm:Get*",
        "ssm:List*",
        "sts:GetAccessKeyInfo",
        "sts:GetCallerIdentity",
        "sts:GetSessionToken"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonECS_FullAccess",
        path: "/",
        description: "Provides administrative access to Amazon ECS resources and enables ECS features through access to other AWS service resources, including VPCs, Auto Scaling groups, and CloudFormation stacks.",
        version_id: "v21",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "ECSIntegrationsManagementPolicy",
      "Effect": "Allow",
      "Action": [
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DescribeScalingActivities",
        "application-autoscaling:DescribeScalingPolicies",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:RegisterScalableTarget",
        "appmesh:DescribeVirtualGateway",
        "appmesh:DescribeVirtualNode",
        "appmesh:ListMeshes",
        "appmesh:ListVirtualGateways",
        "appmesh:ListVirtualNodes",
        "autoscaling:CreateAutoScalingGroup",
        "autoscaling:CreateLaunchConfiguration",
        "autoscaling:DeleteAutoScalingGroup",
        "autoscaling:DeleteLaunchConfiguration",
        "autoscaling:Describe*",
        "autoscaling:UpdateAutoScalingGroup",
        "cloudformation:CreateStack",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeStack*",
        "cloudformation:UpdateStack",
        "cloudwatch:DeleteAlarms",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:GetMetricStatistics",
        "cloudwatch:PutMetricAlarm",
        "codedeploy:BatchGetApplicationRevisions",
        "codedeploy:BatchGetApplications",
        "codedeploy:BatchGetDeploymentGroups",
        "codedeploy:BatchGetDeployments",
        "codedeploy:ContinueDeployment",
        "codedeploy:CreateApplication",
        "codedeploy:CreateDeployment",
        "codedeploy:CreateDeploymentGroup",
        "codedeploy:GetApplication",
        "codedeploy:GetApplicationRevision",
        "codedeploy:GetDeployment",
        "codedeploy:GetDeploymentConfig",
        "codedeploy:GetDeploymentGroup",
        "codedeploy:GetDeploymentTarget",
        "codedeploy:ListApplicationRevisions",
        "codedeploy:ListApplications",
        "codedeploy:ListDeploymentConfigs",
        "codedeploy:ListDeploymentGroups",
        "codedeploy:ListDeployments",
        "codedeploy:ListDeploymentTargets",
        "codedeploy:RegisterApplicationRevision",
        "codedeploy:StopDeployment",
        "ec2:AssociateRouteTable",
        "ec2:AttachInternetGateway",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:CancelSpotFleetRequests",
        "ec2:CreateInternetGateway",
        "ec2:CreateLaunchTemplate",
        "ec2:CreateRoute",
        "ec2:CreateRouteTable",
        "ec2:CreateSecurityGroup",
        "ec2:CreateSubnet",
        "ec2:CreateVpc",
        "ec2:DeleteLaunchTemplate",
        "ec2:DeleteSubnet",
        "ec2:DeleteVpc",
        "ec2:Describe*",
        "ec2:DetachInternetGateway",
        "ec2:DisassociateRouteTable",
        "ec2:ModifySubnetAttribute",
        "ec2:ModifyVpcAttribute",
        "ec2:RequestSpotFleet",
        "ec2:RunInstances",
        "ecs:*",
        "elasticfilesystem:DescribeAccessPoints",
        "elasticfilesystem:DescribeFileSystems",
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:CreateTargetGroup",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeRules",
        "elasticloadbalancing:DescribeTargetGroups",
        "events:DeleteRule",
        "events:DescribeRule",
        "events:ListRuleNamesByTarget",
        "events:ListTargetsByRule",
        "events:PutRule",
        "events:PutTargets",
        "events:RemoveTargets",
        "fsx:DescribeFileSystems",
        "iam:ListAttachedRolePolicies",
        "iam:ListInstanceProfiles",
        "iam:ListRoles",
        "lambda:ListFunctions",
        "logs:CreateLogGroup",
        "logs:DescribeLogGroups",
        "logs:FilterLogEvents",
        "route53:CreateHostedZone",
        "route53:DeleteHostedZone",
        "route53:GetHealthCheck",
        "route53:GetHostedZone",
        "route53:ListHostedZonesByName",
        "servicediscovery:CreatePrivateDnsNamespace",
        "servicediscovery:CreateService",
        "servicediscovery:DeleteService",
        "servicediscovery:GetNamespace",
        "servicediscovery:GetOperation",
        "servicediscovery:GetService",
        "servicediscovery:ListNamespaces",
        "servicediscovery:ListServices",
        "servicediscovery:UpdateService",
        "sns:ListTopics"
      ],
      "Resource": [
        "*"
      ]
    },
    {
      "Sid": "SSMPolicy",
      "Effect": "Allow",
      "Action": [
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath"
      ],
      "Resource": "arn:aws:ssm:*:*:parameter/aws/service/ecs*"
    },
    {
      "Sid": "ManagedCloudformationResourcesCleanupPolicy",
      "Effect": "Allow",
      "Action": [
        "ec2:DeleteInternetGateway",
        "ec2:DeleteRoute",
        "ec2:DeleteRouteTable",
        "ec2:DeleteSecurityGroup"
      ],
      "Resource": [
        "*"
      ],
      "Condition": {
        "StringLike": {
          "ec2:ResourceTag/aws:cloudformation:stack-name": "EC2ContainerService-*"
        }
      }
    },
    {
      "Sid": "TasksPassRolePolicy",
      "Effect": "Allow",
      "Action": "iam:PassRole",
      "Resource": [
        "*"
      ],
      "Condition": {
        "StringLike": {
          "iam:PassedToService": "ecs-tasks.amazonaws.com"
        }
      }
    },
    {
      "Sid": "InfrastructurePassRolePolicy",
      "Effect": "Allow",
      "Action": "iam:PassRole",
      "Resource": [
        "arn:aws:iam::*:role/ecsInfrastructureRole"
      ],
      "Condition": {
        "StringEquals": {
          "iam:PassedToService": "ecs.amazonaws.com"
        }
      }
    },
    {
      "Sid": "InstancePassRolePolicy",
      "Effect": "Allow",
      "Action": "iam:PassRole",
      "Resource": [
        "arn:aws:iam::*:role/ecsInstanceRole*"
      ],
      "Condition": {
        "StringLike": {
          "iam:PassedToService": [
            "ec2.amazonaws.com",
            "ec2.amazonaws.com.cn"
          ]
        }
      }
    },
    {
      "Sid": "AutoScalingPassRolePolicy",
      "Effect": "Allow",
      "Action": "iam:PassRole",
      "Resource": [
        "arn:aws:iam::*:role/ecsAutoscaleRole*"
      ],
      "Condition": {
        "StringLike": {
          "iam:PassedToService": [
            "application-autoscaling.amazonaws.com",
            "application-autoscaling.amazonaws.com.cn"
          ]
        }
      }
    },
    {
      "Sid": "ServiceLinkedRoleCreationPolicy",
      "Effect": "Allow",
      "Action": "iam:CreateServiceLinkedRole",
      "Resource": "*",
      "Condition": {
        "StringLike": {
          "iam:AWSServiceName": [
            "ecs.amazonaws.com",
            "autoscaling.amazonaws.com",
            "ecs.application-autoscaling.amazonaws.com",
            "spot.amazonaws.com",
            "spotfleet.amazonaws.com"
          ]
        }
      }
    },
    {
      "Sid": "ELBTaggingPolicy",
      "Effect": "Allow",
      "Action": [
        "elasticloadbalancing:AddTags"
      ],
      "Resource": "*",
      "Condition": {
        "StringEquals": {
          "elasticloadbalancing:CreateAction": [
            "CreateTargetGroup",
            "CreateRule",
            "CreateListener",
            "CreateLoadBalancer"
          ]
        }
      }
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonECSTaskExecutionRolePolicy",
        path: "/service-role/",
        description: "Provides access to other AWS service resources that are required to run Amazon ECS tasks",
        version_id: "v1",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerServiceforEC2Role",
        path: "/service-role/",
        description: "Default policy for the Amazon EC2 Role for Amazon EC2 Container Service.",
        version_id: "v10",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeTags",
        "ecs:CreateCluster",
        "ecs:DeregisterContainerInstance",
        "ecs:DiscoverPollEndpoint",
        "ecs:Poll",
        "ecs:RegisterContainerInstance",
        "ecs:StartTelemetrySession",
        "ecs:UpdateContainerInstancesState",
        "ecs:Submit*",
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "logs:CreateLogStream",
        "logs:PutLogEvents"
      ],
      "Resource": "*"
    },
    {
      "Effect": "Allow",
      "Action": "ecs:TagResource",
      "Resource": "*",
      "Condition": {
        "StringEquals": {
          "ecs:CreateAction": [
            "CreateCluster",
            "RegisterContainerInstance"
          ]
        }
      }
    },
    {
      "Effect": "Allow",
      "Action": [
        "ecs:ListTagsForResource"
      ],
      "Resource": [
        "arn:aws:ecs:*:*:task/*/*",
        "arn:aws:ecs:*:*:container-instance/*/*"
      ]
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerServiceRole",
        path: "/service-role/",
        description: "Default policy for Amazon ECS service role.",
        version_id: "v2",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:Describe*",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:Describe*",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
        "elasticloadbalancing:RegisterTargets"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonEC2ContainerServiceAutoscaleRole",
        path: "/service-role/",
        description: "Policy to enable Task Autoscaling for Amazon EC2 Container Service",
        version_id: "v2",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "ecs:DescribeServices",
        "ecs:UpdateService"
      ],
      "Resource": [
        "*"
      ]
    },
    {
      "Effect": "Allow",
      "Action": [
        "cloudwatch:DescribeAlarms",
        "cloudwatch:PutMetricAlarm"
      ],
      "Resource": [
        "*"
      ]
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonECSInfrastructureRolePolicyForVolumes",
        path: "/service-role/",
        description: "Provides access to other AWS service resources required to manage volumes associated with ECS workloads.",
        version_id: "v5",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "CreateEBSManagedVolume",
      "Effect": "Allow",
      "Action": "ec2:CreateVolume",
      "Resource": "arn:aws:ec2:*:*:volume/*",
      "Condition": {
        "ArnLike": {
          "aws:RequestTag/AmazonECSCreated": "arn:aws:ecs:*:*:task/*"
        },
        "StringEquals": {
          "aws:RequestTag/AmazonECSManaged": "true"
        }
      }
    },
    {
      "Sid": "CreateEBSManagedVolumeFromSnapshot",
      "Effect": "Allow",
      "Action": "ec2:CreateVolume",
      "Resource": "arn:aws:ec2:*:*:snapshot/*"
    },
    {
      "Sid": "TagOnCreateVolume",
      "Effect": "Allow",
      "Action": "ec2:CreateTags",
      "Resource": "arn:aws:ec2:*:*:volume/*",
      "Condition": {
        "ArnLike": {
          "aws:RequestTag/AmazonECSCreated": "arn:aws:ecs:*:*:task/*"
        },
        "StringEquals": {
          "ec2:CreateAction": "CreateVolume",
          "aws:RequestTag/AmazonECSManaged": "true"
        }
      }
    },
    {
      "Sid": "DescribeVolumesForLifecycle",
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeVolumes",
        "ec2:DescribeAvailabilityZones"
      ],
      "Resource": "*"
    },
    {
      "Sid": "DescribeInstancesForAttachingVolume",
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeInstances"
      ],
      "Resource": "*"
    },
    {
      "Sid": "ManageEBSVolumeLifecycle",
      "Effect": "Allow",
      "Action": [
        "ec2:AttachVolume",
        "ec2:DetachVolume"
      ],
      "Resource": "arn:aws:ec2:*:*:volume/*",
      "Condition": {
        "StringEquals": {
          "aws:ResourceTag/AmazonECSManaged": "true"
        }
      }
    },
    {
      "Sid": "ManageVolumeAttachmentsForEC2",
      "Effect": "Allow",
      "Action": [
        "ec2:AttachVolume",
        "ec2:DetachVolume"
      ],
      "Resource": "arn:aws:ec2:*:*:instance/*"
    },
    {
      "Sid": "DeleteEBSManagedVolume",
      "Effect": "Allow",
      "Action": "ec2:DeleteVolume",
      "Resource": "arn:aws:ec2:*:*:volume/*",
      "Condition": {
        "ArnLike": {
          "aws:ResourceTag/AmazonECSCreated": "arn:aws:ecs:*:*:task/*"
        },
        "StringEquals": {
          "aws:ResourceTag/AmazonECSManaged": "true"
        }
      }
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "CloudWatchLogsFullAccess",
        path: "/",
        description: "Provides full access to CloudWatch Logs",
        version_id: "v8",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "CloudWatchLogsFullAccess",
      "Effect": "Allow",
      "Action": [
        "logs:*",
        "cloudwatch:GenerateQuery",
        "cloudwatch:GenerateQueryResultsSummary",
        "observabilityadmin:GetS3TableIntegration",
        "observabilityadmin:ListS3TableIntegrations",
        "observabilityadmin:ListTelemetryPipelines"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "CloudWatchLogsReadOnlyAccess",
        path: "/",
        description: "Provides read only access to CloudWatch Logs",
        version_id: "v12",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "CloudWatchLogsReadOnlyAccess",
      "Effect": "Allow",
      "Action": [
        "logs:Describe*",
        "logs:Get*",
        "logs:List*",
        "logs:StartQuery",
        "logs:StopQuery",
        "logs:TestMetricFilter",
        "logs:FilterLogEvents",
        "logs:StartLiveTail",
        "logs:StopLiveTail",
        "cloudwatch:GenerateQuery",
        "cloudwatch:GenerateQueryResultsSummary",
        "observabilityadmin:ListS3TableIntegrations",
        "observabilityadmin:GetS3TableIntegration",
        "observabilityadmin:ListTelemetryPipelines"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "IAMFullAccess",
        path: "/",
        description: "Provides full access to IAM via the AWS Management Console.",
        version_id: "v2",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "iam:*",
        "organizations:DescribeAccount",
        "organizations:DescribeOrganization",
        "organizations:DescribeOrganizationalUnit",
        "organizations:DescribePolicy",
        "organizations:ListChildren",
        "organizations:ListParents",
        "organizations:ListPoliciesForTarget",
        "organizations:ListRoots",
        "organizations:ListPolicies",
        "organizations:ListTargetsForPolicy"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "IAMReadOnlyAccess",
        path: "/",
        description: "Provides read only access to IAM via the AWS Management Console.",
        version_id: "v4",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "iam:GenerateCredentialReport",
        "iam:GenerateServiceLastAccessedDetails",
        "iam:Get*",
        "iam:List*",
        "iam:SimulateCustomPolicy",
        "iam:SimulatePrincipalPolicy"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "ElasticLoadBalancingFullAccess",
        path: "/",
        description: "Provides full access to Amazon ElasticLoadBalancing, and limited access to other services necessary to provide ElasticLoadBalancing features.",
        version_id: "v9",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "elasticloadbalancing:*",
      "Resource": "*"
    },
    {
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeAccountAttributes",
        "ec2:DescribeAddresses",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "ec2:DescribeVpcClassicLink",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeClassicLinkInstances",
        "ec2:DescribeRouteTables",
        "ec2:DescribeCoipPools",
        "ec2:GetCoipPoolUsage",
        "ec2:GetSecurityGroupsForVpc",
        "ec2:DescribeVpcPeeringConnections",
        "ec2:DescribeAvailabilityZones",
        "cognito-idp:DescribeUserPoolClient"
      ],
      "Resource": "*"
    },
    {
      "Effect": "Allow",
      "Action": "iam:CreateServiceLinkedRole",
      "Resource": "*",
      "Condition": {
        "StringEquals": {
          "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"
        }
      }
    },
    {
      "Effect": "Allow",
      "Action": "arc-zonal-shift:*",
      "Resource": "arn:aws:elasticloadbalancing:*:*:loadbalancer/*"
    },
    {
      "Effect": "Allow",
      "Action": [
        "arc-zonal-shift:ListManagedResources",
        "arc-zonal-shift:ListZonalShifts"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "ElasticLoadBalancingReadOnly",
        path: "/",
        description: "Provides read only access to Amazon ElasticLoadBalancing and dependent services",
        version_id: "v3",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "Statement1",
      "Effect": "Allow",
      "Action": [
        "elasticloadbalancing:Describe*",
        "elasticloadbalancing:Get*"
      ],
      "Resource": "*"
    },
    {
      "Sid": "Statement2",
      "Effect": "Allow",
      "Action": [
        "ec2:DescribeInstances",
        "ec2:DescribeClassicLinkInstances",
        "ec2:DescribeSecurityGroups"
      ],
      "Resource": "*"
    },
    {
      "Sid": "Statement3",
      "Effect": "Allow",
      "Action": "arc-zonal-shift:GetManagedResource",
      "Resource": "arn:aws:elasticloadbalancing:*:*:loadbalancer/*"
    },
    {
      "Sid": "Statement4",
      "Effect": "Allow",
      "Action": [
        "arc-zonal-shift:ListManagedResources",
        "arc-zonal-shift:ListZonalShifts"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "SecretsManagerReadWrite",
        path: "/",
        description: "Provides read/write access to AWS Secrets Manager via the AWS Management Console. Note: this exludes IAM actions, so combine with IAMFullAccess if rotation configuration is required.",
        version_id: "v5",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "BasePermissions",
      "Effect": "Allow",
      "Action": [
        "secretsmanager:*",
        "cloudformation:CreateChangeSet",
        "cloudformation:DescribeChangeSet",
        "cloudformation:DescribeStackResource",
        "cloudformation:DescribeStacks",
        "cloudformation:ExecuteChangeSet",
        "docdb-elastic:GetCluster",
        "docdb-elastic:ListClusters",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "kms:DescribeKey",
        "kms:ListAliases",
        "kms:ListKeys",
        "lambda:ListFunctions",
        "rds:DescribeDBClusters",
        "rds:DescribeDBInstances",
        "redshift:DescribeClusters",
        "redshift-serverless:ListWorkgroups",
        "redshift-serverless:GetNamespace",
        "tag:GetResources"
      ],
      "Resource": "*"
    },
    {
      "Sid": "LambdaPermissions",
      "Effect": "Allow",
      "Action": [
        "lambda:AddPermission",
        "lambda:CreateFunction",
        "lambda:GetFunction",
        "lambda:InvokeFunction",
        "lambda:UpdateFunctionConfiguration"
      ],
      "Resource": "arn:aws:lambda:*:*:function:SecretsManager*"
    },
    {
      "Sid": "SARPermissions",
      "Effect": "Allow",
      "Action": [
        "serverlessrepo:CreateCloudFormationChangeSet",
        "serverlessrepo:GetApplication"
      ],
      "Resource": "arn:aws:serverlessrepo:*:*:applications/SecretsManager*"
    },
    {
      "Sid": "S3Permissions",
      "Effect": "Allow",
      "Action": [
        "s3:GetObject"
      ],
      "Resource": [
        "arn:aws:s3:::awsserverlessrepo-changesets*",
        "arn:aws:s3:::secrets-manager-rotation-apps-*/*"
      ]
    }
  ]
}"#,
    },
    ManagedPolicy {
        name: "AmazonSSMReadOnlyAccess",
        path: "/",
        description: "Provides read only access to Amazon SSM.",
        version_id: "v1",
        document: r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "ssm:Describe*",
        "ssm:Get*",
        "ssm:List*"
      ],
      "Resource": "*"
    }
  ]
}"#,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{evaluate, Decision, PolicyDocument, PolicyKind, RequestContext};

    fn doc(name: &str) -> PolicyDocument {
        let Some(policy) = aws_managed().iter().find(|p| p.name == name) else {
            panic!("no managed policy {name}");
        };
        match PolicyDocument::parse(policy.document, PolicyKind::Identity) {
            Ok(doc) => doc,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn decide(name: &str, action: &str, resource: &str, ctx: &RequestContext) -> Decision {
        evaluate([&doc(name)], action, resource, ctx)
    }

    const CLUSTER: &str = "arn:aws:ecs:us-east-1:000000000000:cluster/prod";

    #[test]
    fn every_document_parses_as_an_identity_policy() {
        for p in aws_managed() {
            if let Err(e) = PolicyDocument::parse(p.document, PolicyKind::Identity) {
                panic!("{} does not parse: {e}", p.name);
            }
            assert!(
                p.path.starts_with('/') && p.path.ends_with('/'),
                "{}",
                p.name
            );
            assert!(
                !p.description.is_empty() && p.version_id.starts_with('v'),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn names_are_unique_and_arns_resolve() {
        for (i, p) in aws_managed().iter().enumerate() {
            assert!(
                aws_managed()[i + 1..].iter().all(|q| q.name != p.name),
                "{}",
                p.name
            );
            assert_eq!(find(&p.arn()).map(|f| f.name), Some(p.name));
        }
        assert_eq!(
            find("arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy")
                .map(|p| p.path),
            Some("/service-role/")
        );
        assert_eq!(
            find("arn:aws:iam::aws:policy/AdministratorAccess").map(|p| p.name),
            Some("AdministratorAccess")
        );
        for path in [
            "AmazonECSTaskExecutionRolePolicy",
            "AmazonEC2ContainerServiceforEC2Role",
            "AmazonEC2ContainerServiceRole",
            "AmazonEC2ContainerServiceAutoscaleRole",
            "AmazonECSInfrastructureRolePolicyForVolumes",
        ] {
            assert!(find(&format!("arn:aws:iam::aws:policy/service-role/{path}")).is_some());
            // Under the wrong path it is not the same policy.
            assert!(find(&format!("arn:aws:iam::aws:policy/{path}")).is_none());
        }
        assert!(find("arn:aws:iam::aws:policy/administratoraccess").is_none());
        assert!(find("arn:aws:iam::000000000000:policy/AdministratorAccess").is_none());
        assert!(find("arn:aws:iam::aws:policy/").is_none());
    }

    #[test]
    fn administrator_access_allows_everything() {
        let c = RequestContext::new();
        assert_eq!(
            decide("AdministratorAccess", "ecs:RunTask", CLUSTER, &c),
            Decision::Allow
        );
        assert_eq!(
            decide(
                "AdministratorAccess",
                "iam:CreateUser",
                "arn:aws:iam::000000000000:user/x",
                &c
            ),
            Decision::Allow
        );
    }

    #[test]
    fn read_only_access_reads_but_does_not_run() {
        let c = RequestContext::new();
        for action in [
            "ecs:DescribeClusters",
            "ecs:DescribeTasks",
            "ecs:ListTasks",
            "ecs:ListClusters",
            "logs:GetLogEvents",
            "iam:GetRole",
            "sts:GetCallerIdentity",
        ] {
            assert_eq!(
                decide("ReadOnlyAccess", action, CLUSTER, &c),
                Decision::Allow,
                "{action}"
            );
        }
        for action in [
            "ecs:RunTask",
            "ecs:CreateService",
            "ecs:DeleteCluster",
            "iam:CreateRole",
            "secretsmanager:GetSecretValue",
        ] {
            assert_eq!(
                decide("ReadOnlyAccess", action, CLUSTER, &c),
                Decision::ImplicitDeny,
                "{action}"
            );
        }
    }

    #[test]
    fn power_user_access_excludes_iam_management() {
        let c = RequestContext::new();
        assert_eq!(
            decide("PowerUserAccess", "ecs:RunTask", CLUSTER, &c),
            Decision::Allow
        );
        assert_eq!(
            decide("PowerUserAccess", "iam:ListRoles", "*", &c),
            Decision::Allow
        );
        assert_eq!(
            decide("PowerUserAccess", "iam:CreateUser", "*", &c),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn ecs_policies_grant_what_ecs_needs() {
        let c = RequestContext::new();
        for action in [
            "ecr:GetAuthorizationToken",
            "ecr:BatchGetImage",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        ] {
            assert_eq!(
                decide("AmazonECSTaskExecutionRolePolicy", action, "*", &c),
                Decision::Allow,
                "{action}"
            );
        }
        assert_eq!(
            decide("AmazonECSTaskExecutionRolePolicy", "ecs:RunTask", "*", &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                "AmazonEC2ContainerServiceforEC2Role",
                "ecs:SubmitTaskStateChange",
                CLUSTER,
                &c
            ),
            Decision::Allow
        );
        assert_eq!(
            decide("AmazonECS_FullAccess", "ecs:DeleteCluster", CLUSTER, &c),
            Decision::Allow
        );
        // iam:PassRole only towards ECS tasks.
        let role = "arn:aws:iam::000000000000:role/app";
        let mut tasks = RequestContext::new();
        tasks.set("iam:PassedToService", "ecs-tasks.amazonaws.com");
        assert_eq!(
            decide("AmazonECS_FullAccess", "iam:PassRole", role, &tasks),
            Decision::Allow
        );
        let mut lambda = RequestContext::new();
        lambda.set("iam:PassedToService", "lambda.amazonaws.com");
        assert_eq!(
            decide("AmazonECS_FullAccess", "iam:PassRole", role, &lambda),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide("CloudWatchLogsReadOnlyAccess", "logs:PutLogEvents", "*", &c),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide("CloudWatchLogsFullAccess", "logs:DeleteLogGroup", "*", &c),
            Decision::Allow
        );
        assert_eq!(
            decide("AmazonSSMReadOnlyAccess", "ssm:GetParameters", "*", &c),
            Decision::Allow
        );
        assert_eq!(
            decide(
                "SecretsManagerReadWrite",
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf",
                &c
            ),
            Decision::Allow
        );
    }
}
