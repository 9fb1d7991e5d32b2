// publishFrames (NONE data source, IAM only): the arguments are the result, and the
// result is what AppSync delivers to onStreamFrame subscribers.
export function request(ctx) {
  return { payload: ctx.args };
}

export function response(ctx) {
  return ctx.result;
}
