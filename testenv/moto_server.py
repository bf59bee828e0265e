"""moto's S3/IAM server as the test environment runs it, with one correction.

AWS matches the action names in IAM policies case-insensitively (`s3:GetBucketCors` and
`s3:GetBucketCORS` are the same action); moto 5.2.5 compares them case-sensitively, so a
policy written as the vendor guide writes it would be denied here and allowed on AWS.
This wrapper makes `Action`/`NotAction` matching case-insensitive (resources, which AWS
compares case-sensitively, are left as they are), then starts moto's own server with the
given arguments. Pinned to the moto in testenv/requirements.txt: the patch checks that the
method it wraps still exists and refuses to start otherwise.
"""

import sys

from moto.iam import access_control
from moto.server import main

_statement = access_control.IAMPolicyStatement
_original = getattr(_statement, "_check_element_matches", None)
if _original is None:
    sys.exit("testenv/moto_server.py: moto changed (no IAMPolicyStatement._check_element_matches); update the patch")


def _check_element_matches(self, statement_element, value):
    if statement_element not in ("Action", "NotAction"):
        return _original(self, statement_element, value)
    patterns = self._statement[statement_element]
    if not isinstance(patterns, list):
        patterns = [patterns]
    return any(self._match(p.lower(), value.lower()) is not None for p in patterns)


_statement._check_element_matches = _check_element_matches

if __name__ == "__main__":
    main(sys.argv[1:])
