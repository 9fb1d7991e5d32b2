/**
 * `GraphqlApi` on Amplify's `generateClient()`.
 *
 * Every operation passes the Cognito **ID token** as `authToken`, which the resolvers
 * and the subscription require (they refuse access tokens). The operations use
 * Amplify's `lambda` auth mode only because it is the mode in which Amplify sends
 * `authToken` as it is, both on HTTP and on the real-time connection (its `userPool`
 * mode always puts the access token into the real-time handshake); on the wire this is
 * exactly AppSync's user-pool authorization with an ID token: `Authorization: <JWT>`.
 */

import { generateClient } from 'aws-amplify/api';
import { Hub } from 'aws-amplify/utils';

import type { GraphqlApi, GraphqlResult } from './appsync';

// Amplify's Hub event when a subscription's start_ack arrives (CONTROL_MSG.SUBSCRIPTION_ACK).
const SUBSCRIPTION_ACK = 'Subscription ack';

export function amplifyGraphqlApi(): GraphqlApi {
  const client = generateClient();
  return {
    subscribe(query, variables, token, handlers) {
      const observable = client.graphql({
        query,
        variables,
        authMode: 'lambda',
        authToken: token,
      }) as unknown as {
        subscribe(o: { next(v: any): void; error(e: any): void }): { unsubscribe(): void };
      };
      return observable.subscribe({
        next: (value) => handlers.next(value?.data ?? {}),
        error: (err) => handlers.error(describe(err)),
      });
    },
    onAck(streamId, listener) {
      return Hub.listen('api', ({ payload }) => {
        const p = payload as { event?: string; data?: { variables?: { streamId?: string } } };
        if (p.event === SUBSCRIPTION_ACK && p.data?.variables?.streamId === streamId) listener();
      });
    },
    async request(query, variables, token): Promise<GraphqlResult> {
      try {
        const result = (await client.graphql({
          query,
          variables,
          authMode: 'lambda',
          authToken: token,
        })) as GraphqlResult;
        return result;
      } catch (err) {
        // Amplify rejects with the GraphQL result when it has errors.
        const e = err as GraphqlResult & { message?: string };
        if (Array.isArray(e?.errors)) return { data: e.data ?? null, errors: e.errors };
        throw err;
      }
    },
  };
}

function describe(err: any): string {
  const first = err?.errors?.[0];
  return first?.message ?? err?.message ?? String(err);
}
