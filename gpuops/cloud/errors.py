"""One clear message, with what to do, for the AWS failures a user can act on.

``aws_errors()`` wraps every boto3 call of the aws target: botocore exceptions come out as
``gpuops.errors`` exceptions (``UsageError`` for what the user must fix in their account or
options, ``ExternalError`` for the rest). The messages never include request parameters, so no
user data or credential can leak through an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gpuops.errors import ExternalError, GpuopsError, UsageError

CREDENTIAL_HINT = (
    "configure the standard AWS credential chain: `aws configure`, `aws sso login --profile P` with "
    "AWS_PROFILE=P, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment"
)

# error code -> (message, hint); {region} and {detail} are filled in
_KNOWN: dict[str, tuple[str, str]] = {
    "VcpuLimitExceeded": (
        "your vCPU quota for this instance family in {region} is too low for this launch",
        "ask for more in Service Quotas (EC2 > 'Running On-Demand G and VT instances', or the P family's "
        "quota), or choose a smaller --instance-type or another --region; `gpuops ps` shows what is running",
    ),
    "InsufficientInstanceCapacity": (
        "AWS has no free capacity for this instance type in {region} right now",
        "try again in a few minutes, another --region, or another --instance-type (spot and on-demand "
        "capacity differ: try with or without --spot)",
    ),
    "MaxSpotInstanceCountExceeded": (
        "you have reached the spot instance quota in {region}",
        "ask for more in Service Quotas (EC2 > 'All G and VT Spot Instance Requests'), stop spot runs "
        "you do not need (`gpuops ps`, `gpuops stop RUN_ID`), or launch without --spot",
    ),
    "InstanceLimitExceeded": (
        "you have reached the instance quota for this type in {region}",
        "ask for more in Service Quotas, or stop instances you do not need (`gpuops ps`)",
    ),
    "UnauthorizedOperation": (
        "your AWS identity is not allowed to do this: {detail}",
        "the aws target needs ec2:RunInstances/DescribeInstances/TerminateInstances/CreateTags, "
        "ssm:GetParameter, s3 on the gpuops bucket, ecr push, and iam:PassRole for the instance profile",
    ),
    "InvalidAMIID.NotFound": (
        "the AMI does not exist in {region}: {detail}",
        "AMIs are per region: pass an AMI of this region with --ami, or leave --ami out",
    ),
    "ParameterNotFound": (
        "the Deep Learning AMI's SSM parameter is not published in {region}",
        "pass an AMI id with --ami, or use a region where the AWS Deep Learning Base AMI exists",
    ),
}

_CREDENTIAL_CODES = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AuthFailure",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "TokenRefreshRequired",
}


def translate(err: BaseException, region: str = "?") -> GpuopsError | None:
    """The gpuops error for a botocore exception, or None when it is not one."""
    from botocore import exceptions as bx

    if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
        return UsageError("no AWS credentials found", hint=CREDENTIAL_HINT)
    if isinstance(err, bx.TokenRetrievalError | bx.SSOTokenLoadError | bx.UnauthorizedSSOTokenError):
        return UsageError(
            "your AWS SSO session has expired", hint="run `aws sso login` (with your AWS_PROFILE)"
        )
    if isinstance(err, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        return ExternalError(f"cannot reach AWS in {region}: {err}", hint="check the network and --region")
    if isinstance(err, bx.ClientError):
        info = err.response.get("Error", {})
        code = str(info.get("Code", ""))
        detail = str(info.get("Message", "")).strip()
        if code in _CREDENTIAL_CODES:
            return UsageError(
                f"your AWS credentials are expired or invalid ({code})",
                hint="refresh them (`aws sso login`, new keys, or a new session token); " + CREDENTIAL_HINT,
            )
        if code in _KNOWN:
            msg, hint = _KNOWN[code]
            return UsageError(msg.format(region=region, detail=detail) + f" ({code})", hint=hint)
        op = getattr(err, "operation_name", "an AWS call")
        return ExternalError(f"AWS refused {op}: {code}: {detail}")
    if isinstance(err, bx.BotoCoreError):
        return ExternalError(f"AWS client error: {err}")
    return None


@contextmanager
def aws_errors(region: str = "?") -> Iterator[None]:
    try:
        yield
    except GpuopsError:
        raise
    except Exception as err:  # botocore's exception classes are only importable lazily
        mapped = translate(err, region)
        if mapped is None:
            raise
        raise mapped from None
