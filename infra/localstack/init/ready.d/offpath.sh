#!/usr/bin/env bash
# Creates offpath's table, queues (jobs and webhooks, each with its dead-letter queue),
# bucket and webhook key secret with the settings of template.yaml. LocalStack runs it when ready; it also runs against any endpoint:
#   AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 infra/localstack/init/ready.d/offpath.sh
# tests/template.rs runs it against moto and compares the result with template.yaml.
set -euo pipefail
table="${OFFPATH_TABLE:-offpath-jobs}"
queue="${OFFPATH_QUEUE_NAME:-offpath-jobs}"
dlq="${OFFPATH_DLQ_NAME:-offpath-jobs-dlq}"
webhooks="${OFFPATH_WEBHOOK_QUEUE_NAME:-offpath-webhooks}"
webhooks_dlq="${OFFPATH_WEBHOOK_DLQ_NAME:-offpath-webhooks-dlq}"
secret="${OFFPATH_WEBHOOK_SECRET_NAME:-offpath-webhook-key}"
bucket="${OFFPATH_BUCKET:-offpath-blobs}"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
aws() { command "${AWS_CLI:-aws}" --region "$region" --endpoint-url "${AWS_ENDPOINT_URL:-http://localhost:4566}" --output text "$@"; }

# index NAME HASH [RANGE]: a keys-only global secondary index (as template.yaml).
index() {
  local keys="{\"AttributeName\":\"$2\",\"KeyType\":\"HASH\"}"
  [[ -n "${3:-}" ]] && keys="$keys,{\"AttributeName\":\"$3\",\"KeyType\":\"RANGE\"}"
  echo "{\"IndexName\":\"$1\",\"KeySchema\":[$keys],\"Projection\":{\"ProjectionType\":\"KEYS_ONLY\"}}"
}
aws dynamodb create-table --table-name "$table" \
  --attribute-definitions AttributeName=pk,AttributeType=S \
    AttributeName=due_shard,AttributeType=N AttributeName=due_at_epoch_ms,AttributeType=N \
    AttributeName=outbox_shard,AttributeType=N AttributeName=outbox_at_epoch_ms,AttributeType=N \
    AttributeName=owner,AttributeType=S AttributeName=created_at_epoch_ms,AttributeType=N \
    AttributeName=owner_slice,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH \
  --global-secondary-indexes "[$(index due due_shard due_at_epoch_ms),$(index outbox outbox_shard outbox_at_epoch_ms),$(index owner_created owner created_at_epoch_ms),$(index owner_unfinished owner_slice)]" \
  --billing-mode PAY_PER_REQUEST >/dev/null 2>&1 || true
aws dynamodb wait table-exists --table-name "$table"
aws dynamodb update-time-to-live --table-name "$table" \
  --time-to-live-specification Enabled=true,AttributeName=expires_at_epoch_s >/dev/null 2>&1 || true

# queues NAME DLQ_NAME MAX_RECEIVE_COUNT: creates both, prints "QUEUE_URL DLQ_URL".
queues() {
  local dlq_url dlq_arn queue_url
  dlq_url="$(aws sqs create-queue --queue-name "$2" --attributes MessageRetentionPeriod=1209600 --query QueueUrl)"
  dlq_arn="$(aws sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names QueueArn --query Attributes.QueueArn)"
  queue_url="$(aws sqs create-queue --queue-name "$1" --query QueueUrl --attributes \
    "{\"VisibilityTimeout\":\"360\",\"MessageRetentionPeriod\":\"345600\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":$3}\"}")"
  echo "$queue_url $dlq_url"
}
pair="$(queues "$queue" "$dlq" 5)"; read -r queue_url dlq_url <<<"$pair"
pair="$(queues "$webhooks" "$webhooks_dlq" 33)"; read -r webhooks_url webhooks_dlq_url <<<"$pair"
secret_arn="$(aws secretsmanager describe-secret --secret-id "$secret" --query ARN 2>/dev/null \
  || aws secretsmanager create-secret --name "$secret" --query ARN \
       --secret-string "$(aws secretsmanager get-random-password --password-length 64 --exclude-punctuation --query RandomPassword)")"
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
echo "OFFPATH_WEBHOOK_QUEUE_URL=$webhooks_url"
echo "OFFPATH_WEBHOOK_DLQ_URL=$webhooks_dlq_url"
echo "OFFPATH_WEBHOOK_KEY_SECRET=$secret_arn"
echo "OFFPATH_BUCKET=$bucket"
