// onStreamFrame (NONE data source): deliver a stream's frames only to its owner. The
// stream may not exist yet when the client subscribes (it subscribes first), so the
// owner cannot be checked here; the enhanced filter compares it on every publish.
// Only ID tokens are accepted, as on every other entry point (docs/security.md).
import { util, extensions } from '@aws-appsync/utils';

export function request(ctx) {
  return { payload: null };
}

export function response(ctx) {
  if (ctx.identity.claims.token_use !== 'id') {
    util.unauthorized();
  }
  extensions.setSubscriptionFilter(
    util.transform.toSubscriptionFilter({
      owner: { eq: ctx.identity.sub },
      streamId: { eq: ctx.args.streamId },
    }),
  );
  return null;
}
