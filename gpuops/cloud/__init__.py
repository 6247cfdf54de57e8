"""AWS plumbing for ``--target aws``: prices, AMI lookup, ECR, S3, the user-data bootstrap, errors.

Every module imports boto3 lazily (inside functions), so importing ``gpuops.cloud`` stays cheap.
The on-instance side is ``agent.py`` (standard library only) and ``bootstrap.sh.tmpl``.
"""
