/**
 * Lambda entry point (Function URL, invoke mode RESPONSE_STREAM; and the REST API's
 * streaming routes, response transfer mode STREAM).
 *
 * `awslambda` is the global that Lambda's Node.js runtime defines before it
 * imports the handler (streamifyResponse, HttpResponseStream); the local cloud's
 * Function URL host defines the same global. The logic lives in src/ and takes
 * its dependencies as arguments, so tests never need the global.
 *
 * Everything here is built once per execution environment (cold start) and reused
 * by later invocations: settings, the JWKS cache, the SDK clients and their
 * keep-alive connections.
 */

import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

import { BedrockModel, createBedrockClient } from './src/bedrock.mjs';
import { createStreamHandler } from './src/handler.mjs';
import { verifierFromSettings } from './src/jwt.mjs';
import { jsonLog } from './src/log.mjs';
import { loadSettings } from './src/settings.mjs';
import { StreamStore } from './src/store.mjs';

const settings = loadSettings(process.env);

const streamHandler = createStreamHandler({
  settings,
  verifier: verifierFromSettings(settings),
  // The endpoint comes from AWS_ENDPOINT_URL_DYNAMODB when set (read by the SDK).
  store: new StreamStore(settings, new DynamoDBClient({ region: settings.region })),
  model: new BedrockModel(settings, () => createBedrockClient(settings), { log: jsonLog }),
  httpResponseStreamFrom: (stream, prelude) => awslambda.HttpResponseStream.from(stream, prelude),
  // The REST API front door's CORS, as the Python app reads it (chalicelib/settings.py).
  corsAllowOrigin: process.env.CORS_ALLOW_ORIGIN ?? '*',
  log: jsonLog,
});

export const handler = awslambda.streamifyResponse(streamHandler);
