"""Demo fixtures in the local S3 server: a bucket with images, and two IAM users.

`labellerr-import` gets exactly the policy `s3connect policy` printed (argv[1]),
`labellerr-export` the one for the whole bucket with Import and Export (argv[2]);
`labellerr-misconfigured` gets the classic hand-written mistake: s3:GetObject on the
bucket ARN instead of bucket/*. Prints both users' keys as JSON on stdout.
Runs with the test environment's virtualenv (boto3) and its env file's variables.
"""

import json
import os
import sys

import boto3

BUCKET = "labelling-data"


def main():
    endpoint = os.environ["S3CONNECT_TEST_S3_ENDPOINT"]
    admin = dict(
        aws_access_key_id=os.environ["S3CONNECT_TEST_S3_ADMIN_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["S3CONNECT_TEST_S3_ADMIN_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        endpoint_url=endpoint,
    )
    s3 = boto3.client("s3", **admin)
    iam = boto3.client("iam", **admin)
    s3.create_bucket(Bucket=BUCKET)
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"images/img-{i}.jpg", Body=b"\xff\xd8 demo image")

    with open(sys.argv[1]) as f:
        least_privilege = f.read()
    with open(sys.argv[2]) as f:
        export_policy = f.read()
    mistake = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:GetBucketCORS", "s3:PutBucketCORS"],
        "Resource": f"arn:aws:s3:::{BUCKET}",
    }]})
    keys = {}
    users = (("labellerr-import", least_privilege), ("labellerr-export", export_policy), ("labellerr-misconfigured", mistake))
    for user, policy in users:
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3connect", PolicyDocument=policy)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    json.dump(keys, sys.stdout)


if __name__ == "__main__":
    main()
