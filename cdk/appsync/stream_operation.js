// startStream, cancelStream and streamFrames: one Lambda data source (the Chalice
// function `appsync_resolver`). The function answers {"data": ...} or
// {"error": {"code", "message", "retryable"}}; an error becomes a GraphQL error whose
// errorType is the frame protocol's error code (docs/protocol.md).
import { util } from '@aws-appsync/utils';

export function request(ctx) {
  return {
    operation: 'Invoke',
    payload: {
      field: ctx.info.fieldName,
      arguments: ctx.args,
      identity: { sub: ctx.identity.sub, tokenUse: ctx.identity.claims.token_use },
    },
  };
}

export function response(ctx) {
  if (ctx.error) {
    util.error('Internal error.', 'INTERNAL');
  }
  const { data, error } = ctx.result;
  if (error) {
    util.error(error.message, error.code, null, { retryable: error.retryable });
  }
  return data;
}
