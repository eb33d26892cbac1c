#!/usr/bin/env bash
# Creates offpath's table, queue, dead-letter queue and bucket with the settings of
# template.yaml. LocalStack runs it when ready; it also runs against any endpoint:
#   AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 infra/localstack/init/ready.d/offpath.sh
# tests/template.rs runs it against moto and compares the result with template.yaml.
set -euo pipefail
table="${OFFPATH_TABLE:-offpath-jobs}"
queue="${OFFPATH_QUEUE_NAME:-offpath-jobs}"
dlq="${OFFPATH_DLQ_NAME:-offpath-jobs-dlq}"
bucket="${OFFPATH_BUCKET:-offpath-blobs}"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
aws() { command "${AWS_CLI:-aws}" --region "$region" --endpoint-url "${AWS_ENDPOINT_URL:-http://localhost:4566}" --output text "$@"; }

aws dynamodb create-table --table-name "$table" \
  --attribute-definitions AttributeName=pk,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH \
  --billing-mode PAY_PER_REQUEST >/dev/null 2>&1 || true
aws dynamodb wait table-exists --table-name "$table"
aws dynamodb update-time-to-live --table-name "$table" \
  --time-to-live-specification Enabled=true,AttributeName=expires_at_epoch_s >/dev/null 2>&1 || true

dlq_url="$(aws sqs create-queue --queue-name "$dlq" --attributes MessageRetentionPeriod=1209600 --query QueueUrl)"
dlq_arn="$(aws sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn --query Attributes.QueueArn)"
queue_url="$(aws sqs create-queue --queue-name "$queue" --query QueueUrl --attributes \
  "{\"VisibilityTimeout\":\"360\",\"MessageRetentionPeriod\":\"345600\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":5}\"}")"
aws s3api create-bucket --bucket "$bucket" >/dev/null 2>&1 || true
aws s3api put-public-access-block --bucket "$bucket" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-encryption --bucket "$bucket" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'
rule() { echo "{\"ID\":\"expire-${1%/}\",\"Filter\":{\"Prefix\":\"$1\"},\"Status\":\"Enabled\",\"Expiration\":{\"Days\":$2},\"AbortIncompleteMultipartUpload\":{\"DaysAfterInitiation\":1}}"; }
aws s3api put-bucket-lifecycle-configuration --bucket "$bucket" --lifecycle-configuration \
  "{\"Rules\":[$(rule uploads/ 1),$(rule parts/ 3),$(rule results/ 30)]}"

echo "OFFPATH_TABLE=$table"
echo "OFFPATH_QUEUE_URL=$queue_url"
echo "OFFPATH_DLQ_URL=$dlq_url"
echo "OFFPATH_BUCKET=$bucket"
