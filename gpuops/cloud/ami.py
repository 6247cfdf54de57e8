"""The AMI: the AWS Deep Learning Base GPU AMI, found through its public SSM parameter.

The parameter name follows the scheme that AWS documents in "Finding the ID of a DLAMI"
(https://docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html):
``/aws/service/deeplearning/ami/$architecture/$ami_type/latest/ami-id``, where ``ami_type`` is the
AMI's name without "Deep", "Learning" and "AMI". For "Deep Learning Base OSS Nvidia Driver GPU AMI
(Ubuntu 22.04)" (NVIDIA driver, CUDA, Docker and the NVIDIA container toolkit preinstalled, G4dn/G5/
G6/P4/P5 supported per its release notes) that gives the name below.
"""

from __future__ import annotations

from typing import Any

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def resolve_ami(ssm: Any, override: str | None = None, parameter: str = DLAMI_PARAMETER) -> tuple[str, str]:
    """(ami id, where it came from). ``override`` (``--ami``) wins and is not looked up."""
    if override:
        return override, "--ami"
    value = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    return value, f"ssm:{parameter}"
