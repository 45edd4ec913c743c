"""The mail queue in AWS: SQS SendMessage over dashgate.aws (no boto3 on the request path)."""

from __future__ import annotations

from urllib.parse import urlsplit

from dashgate.aws import AwsError, Endpoint
from dashgate.errors import ServiceUnavailable
from dashgate.mail import MailRequest

#: SQS's JSON protocol (botocore's `sqs` service model since 2023): one POST to the endpoint's root.
JSON_PROTOCOL = "application/x-amz-json-1.0"


class SqsQueue:
    """An SQS queue by its URL; `send` puts exactly one message on it."""

    def __init__(self, queue_url: str, endpoint: Endpoint | None = None) -> None:
        parts = urlsplit(queue_url)
        self.queue_url = queue_url
        # The queue URL names its endpoint (https://sqs.<region>.amazonaws.com/<account>/<name>).
        self.endpoint = endpoint or Endpoint(f"{parts.scheme}://{parts.netloc}", service="sqs")

    def send(self, request: MailRequest) -> None:
        """SendMessage with the request as the body; ServiceUnavailable (from the cause) when it fails."""
        try:
            self.endpoint.post_json("/", {"QueueUrl": self.queue_url, "MessageBody": request.to_json()},
                                    content_type=JSON_PROTOCOL, headers={"X-Amz-Target": "AmazonSQS.SendMessage"})
        except AwsError as exc:
            raise ServiceUnavailable() from exc
