"""The instance profile: what the instance may do with its own temporary credentials.

The instance never sees the user's credentials. It gets a role with exactly: read/write under
``gpuops/`` in the run bucket, and pull from ECR. ``ensure_instance_profile`` creates the role,
its inline policy and the profile when they are missing (idempotent).
"""

from __future__ import annotations

import json
from typing import Any

_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def instance_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"arn:aws:s3:::{bucket}/gpuops/*",
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": ["gpuops/*"]}},
            },
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:GetAuthorizationToken",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": "*",
            },
        ],
    }


def ensure_instance_profile(iam: Any, name: str, bucket: str) -> bool:
    """Make sure profile ``name`` (and role ``name``) exist; True when something was created."""
    from botocore.exceptions import ClientError

    def missing(e: ClientError) -> bool:
        return e.response.get("Error", {}).get("Code") == "NoSuchEntity"

    created = False
    try:
        iam.get_role(RoleName=name)
    except ClientError as e:
        if not missing(e):
            raise
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(_TRUST),
            Description="gpuops training instances: run bucket and ECR pull only",
        )
        created = True
    iam.put_role_policy(
        RoleName=name, PolicyName=f"{name}-bucket", PolicyDocument=json.dumps(instance_policy(bucket))
    )
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as e:
        if not missing(e):
            raise
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        created = True
    if not any(r.get("RoleName") == name for r in profile.get("Roles", [])):
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        created = True
    return created
