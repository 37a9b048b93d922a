import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { z } from "zod";
import { logFormats, logLevels, logTimes } from "../log.js";
import { bodyModes, ROUTING_HEADERS } from "../protocol.js";
import { parseRedisUrl, RedisUrlError } from "./redis-url.js";

/** Most picks `scheduling.debugPicks` may keep: with MAX_EXPLAINED_CANDIDATES each, a few MB at most. */
export const MAX_DEBUG_PICKS = 1000;

/** The filters `scheduling.filters` may name, in their default order (scheduling/chain.ts builds them). */
export const SCHEDULING_FILTERS = ["subset", "health", "saturation"] as const;
export type FilterName = (typeof SCHEDULING_FILTERS)[number];

const port = z.number().int().min(0).max(65535);
/** The reason a Redis URL cannot be read, never the URL itself (it may hold a password). */
function redisUrlProblem(url: string): string | undefined {
  try {
    parseRedisUrl(url);
    return undefined;
  } catch (error) {
    if (error instanceof RedisUrlError) return error.message;
    throw error;
  }
}
const redisUrl = z.string().superRefine((url, context) => {
  const problem = redisUrlProblem(url);
  if (problem !== undefined) context.addIssue({ code: "custom", message: problem });
});
const positive = z.number().positive();

/** `ip:port` with a literal IP: Envoy's ORIGINAL_DST cluster routes to nothing else. */
export function isEngineAddress(value: string): boolean {
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(value);
  if (match === null) return false;
  const [, host = "", portText = ""] = match;
  const portNumber = Number(portText);
  const bracketed = value.startsWith("[");
  const version = isIP(host);
  return portNumber > 0 && portNumber <= 65535 && (version === 4 ? !bracketed : version === 6 && bracketed);
}

/** The HTTP API may be left open only where nothing but this host can reach it. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (bare === "localhost" || bare === "::1") return true;
  const v4 = bare.startsWith("::ffff:") ? bare.slice(7) : bare;
  return isIP(v4) === 4 && v4.startsWith("127.");
}

/** A path to a file that must exist when the config is read; its content is checked as it loads. */
const existingFile = (what: string) =>
  z
    .string()
    .min(1)
    .refine((file) => existsSync(file), { error: (issue) => `${what} ${JSON.stringify(issue.input)} does not exist` });

const engineAddress = z.string().refine(isEngineAddress, {
  error: (issue) => `${JSON.stringify(issue.input)} is not a literal ip:port (IPv6 as [addr]:port)`,
});

/**
 * The pool's tokenizer: "o200k" (built in), or a Hugging Face `tokenizer.json` on disk, read with
 * the `tokenizer_config.json` beside it. The file must exist when the config is read; its content
 * is checked as it loads, in the background.
 */
const poolTokenizer = z.union([
  z.literal("o200k"),
  z.strictObject({
    file: existingFile("tokenizer file"),
    /**
     * Texts costing more (countingCost: ASCII characters, others weighing more) are priced from a
     * sample: ~1 µs a character in the pure-JS Hugging Face tokenizer, so ~20 ms of its worker.
     */
    countWholeUpTo: z.number().int().min(0).default(16_384),
  }),
], { error: 'expected "o200k" or { file: "/path/to/tokenizer.json" }' });
/** DNS server as `ip` or `ip:port` (what node:dns `setServers` takes). */
const dnsServer = z.string().refine((value) => isIP(value) !== 0 || isEngineAddress(value), {
  error: (issue) => `${JSON.stringify(issue.input)} is not an ip or ip:port`,
});

const pool = z.strictObject({
  name: z.string().min(1),
  models: z.array(z.string().min(1)).min(1),
  /** Literal engines; a pool with `dns` gets them from its A/AAAA records instead. */
  endpoints: z.array(engineAddress).default([]),
  dns: z
    .strictObject({
      name: z.string().min(1),
      port: port.min(1),
      intervalSeconds: positive.default(10),
      servers: z.array(dnsServer).min(1).optional(),
    })
    .optional(),
  tokenizer: poolTokenizer.default("o200k"),
});

/** What a ProcessingRequest carries besides a BUFFERED body: its metadata and framing. */
const MESSAGE_ROOM_BYTES = 1 << 20;
/** gRPC's default message limit. */
const GRPC_MESSAGE_BYTES = 4 << 20;
const leastMessageBytes = (extproc: { maxRequestBodyBytes: number }): number => extproc.maxRequestBodyBytes + MESSAGE_ROOM_BYTES;

const bodyMode = z.enum(bodyModes as [string, ...string[]]).transform((mode) => mode as (typeof bodyModes)[number]);

export const configSchema = z
  .strictObject({
    /** picker: choose and route; observer: another component routed, only track the load. */
    role: z.enum(["picker", "observer"]).default("picker"),
    extproc: z
      .strictObject({
        host: z.string().min(1).default("127.0.0.1"),
        port: port.default(9002),
        maxRequestBodyBytes: z.number().int().positive().default(16 << 20),
        /** Request bodies held for the pick, all requests together: past it a request is refused (503) until others are picked. */
        maxHeldBodyBytes: z.number().int().positive().default(256 << 20),
        /**
         * Routing headers read from the request. A client can send any header, so none is trusted
         * unless named: an untrusted one is ignored, and removed before the engine sees it (picker role).
         */
        trustedHeaders: z.array(z.enum(ROUTING_HEADERS)).default([]),
        /**
         * Largest gRPC message either way. A BUFFERED body arrives in one message, so it must hold
         * maxRequestBodyBytes and the rest of that message; default: that, or gRPC's own 4 MiB if larger.
         */
        maxMessageBytes: z.number().int().positive().optional(),
        /** ext_proc streams open at once (one per HTTP exchange in flight); a stream over it is refused at once. */
        maxStreams: z.number().int().positive().default(10_000),
        /**
         * A request body held for the pick (FULL_DUPLEX_STREAMED) that has not all arrived after
         * this long is refused with 408, so a client that never finishes cannot hold memory; 0 = never.
         */
        requestBodyTimeoutSeconds: z.number().min(0).default(120),
        /**
         * ext_proc over TLS (plaintext without it). PEM files, read again when they change; with
         * clientCaFile only clients presenting a certificate that CA signed complete the handshake.
         */
        tls: z
          .strictObject({
            certFile: existingFile("certificate file"),
            keyFile: existingFile("private key file"),
            clientCaFile: existingFile("client CA file").optional(),
          })
          .optional(),
        /** Used only when Envoy does not announce its modes (no protocol_config before Envoy 1.34). */
        assumedBodyModes: z
          .strictObject({ request: bodyMode.default("FULL_DUPLEX_STREAMED"), response: bodyMode.default("FULL_DUPLEX_STREAMED") })
          .prefault({}),
      })
      .transform((extproc) => ({ ...extproc, maxMessageBytes: extproc.maxMessageBytes ?? Math.max(GRPC_MESSAGE_BYTES, leastMessageBytes(extproc)) }))
      .prefault({}),
    /**
     * The gRPC health listener. Loopback, like every listener here: a sidecar's Envoy probes it in
     * its own pod or host; the kubelet's probes need the pod's address (0.0.0.0 in Kubernetes).
     */
    health: z.strictObject({ host: z.string().min(1).default("127.0.0.1"), port: port.default(9003) }).prefault({}),
    http: z
      .strictObject({
        host: z.string().min(1).default("127.0.0.1"),
        port: port.default(9090),
        /** Bearer token for the mutating endpoints; required when `host` is not loopback. */
        token: z.string().min(16, { error: "must be at least 16 characters" }).optional(),
      })
      .prefault({}),
    scheduling: z
      .strictObject({
        weights: z
          .strictObject({
            requests: z.number().min(0).default(1),
            prefillRequests: z.number().min(0).default(1),
            prefillTokens: z.number().min(0).default(1),
            tokensHeld: z.number().min(0).default(0.5),
          })
          .prefault({}),
        /** The scheduling chain's filters, in order, after the model's pool (see scheduling/chain.ts). */
        filters: z
          .array(z.enum(SCHEDULING_FILTERS))
          .refine((names) => new Set(names).size === names.length, "names a filter twice")
          .default([...SCHEDULING_FILTERS]),
        /** The chain's scorers and their weights: the lowest weighted total cost wins; 0 turns one off. */
        scorers: z
          .strictObject({
            load: z.number().min(0).default(1),
            slowStart: z.number().min(0).default(1),
            /**
             * Prefix affinity: toward the engine that served the prompt's leading blocks (this
             * sidecar's picks, and other replicas' when they share). Against normalised load, an
             * engine holding the whole prefix wins until the others carry under 1 − weight of its
             * load (a tenth at 0.9): the best measured in bench:routing (see the README).
             */
            prefix: z.number().min(0).default(0.9),
            /**
             * Predicted time to first token, in seconds, from each pool's model learnt online from
             * the first tokens seen (queue ahead, requests running, the prompt left to prefill
             * past a cached prefix). Each pick's forecast is measured against its first token
             * whether this is on or not (metadata_center_ttft_prediction_error_seconds).
             */
            ttft: z.number().min(0).default(0),
            /**
             * Step phase: toward the engine whose current step ends soonest, from the rhythm its
             * streamed tokens arrive in (a request waits for the step under way before its prefill),
             * as a share of the request's TTFT: it decides among engines of near-equal load.
             */
            stepPhase: z.number().min(0).default(0.25),
          })
          .prefault({}),
        /** Next-best engines named after the pick in the `envoy.lb` metadata (not in the header). */
        fallbacks: z.number().int().min(0).default(0),
        /**
         * Most candidates one pick weighs: in a larger pool, those the request-dependent scorers
         * like best and others at random (the store's atomic pick reads each one's live load). 0 = all.
         */
        maxCandidates: z
          .number()
          .int()
          .min(0)
          .refine((max) => max !== 1, "1 would pick at random: 0 (all) or at least 2")
          .default(128),
        /** Open requests per engine; when every candidate is at it, 429. 0 = no limit. */
        maxRequestsPerEngine: z.number().int().min(0).default(0),
        /**
         * Requests in prefill (no first token yet) per engine; when every candidate is at it, the
         * request waits in the queue (scheduling.queue), shortest prompt first, or 429 without one.
         * Holding the rest in the sidecar lets short prompts overtake long ones in a burst. 0 = no limit.
         */
        maxPrefillRequestsPerEngine: z.number().int().min(0).default(0),
        /** Consecutive upstream errors (5xx, or no response at all) that take an engine out of picking; 0 = never. */
        ejectAfterErrors: z.number().int().min(0).default(5),
        /** First ejection's length; doubles on each ejection in a row, up to maxEjectSeconds. */
        ejectSeconds: positive.default(10),
        maxEjectSeconds: positive.default(300),
        /** Warm-up of an engine back from ejection, or new in the pool; 0 = none. */
        slowStartSeconds: z.number().min(0).default(30),
        /** A request that got no response counts against its engine only if a TCP connection to the engine fails within this. */
        probeTimeoutSeconds: positive.default(1),
        /** Requests held while every engine of their pool is at maxRequestsPerEngine or maxPrefillRequestsPerEngine, dispatched as engines free up. */
        queue: z
          .strictObject({
            /** Requests held at once; 0 = no queue (429 at once). */
            maxRequests: z.number().int().min(0).default(0),
            /** Request body bytes held at once. */
            maxBytes: z.number().int().min(0).default(64 << 20),
            /** Longest a request is held before it is answered 429; below Envoy's message_timeout in modes that have one. */
            maxWaitMs: positive.default(5000),
            /** A held request's prompt counts half as long for each agingMs waited, so long prompts are not starved. */
            agingMs: positive.default(500),
            /** How often held requests try again without a release seen here (another replica's). */
            retryMs: positive.default(10),
            /** Request header with an integer priority (higher first); only one the gateway sets and strips from clients. */
            priorityHeader: z
              .string()
              .regex(/^[a-z0-9-]+$/, "a lowercase header name")
              .optional(),
            /** Priority by model name when the request carries none; 0 otherwise. */
            priorities: z.record(z.string(), z.number().int()).default({}),
          })
          .prefault({}),
        /** The last picks kept, explained, for GET /debug/picks; 0 = none (with debug logging off, none is explained). */
        debugPicks: z.number().int().min(0).max(MAX_DEBUG_PICKS).default(100),
      })
      .prefault({}),
    load: z
      .strictObject({
        /** Open requests never closed are dropped after this long (metadata-center: 660 s). */
        ttlSeconds: positive.default(660),
        sweepSeconds: positive.default(60),
        /** Largest plain JSON response kept to read its `usage`. */
        maxJsonResponseBytes: z.number().int().min(0).default(1 << 20),
        /** memory: this process only (one replica); redis: one atomic view shared by every replica. */
        store: z.enum(["memory", "redis"]).default("memory"),
        redis: z
          .strictObject({
            /** redis:// or rediss:// (TLS), password in the URL or below; a list is a Redis Cluster's seed nodes. */
            url: z.union([redisUrl, z.array(redisUrl).min(1)]).default("redis://127.0.0.1:6379"),
            /**
             * A file holding the password (a mounted Secret; surrounding whitespace dropped), used when
             * the URL holds none; METADATA_CENTER_REDIS_PASSWORD is the other way. Read at start.
             */
            passwordFile: existingFile("password file").optional(),
            /**
             * rediss:// only: PEM CA certificates the server's certificate must chain to, in place of
             * Node's default roots (a private CA). Without it the default roots are trusted, plus
             * NODE_EXTRA_CA_CERTS. Read at start; a file that holds no certificate stops the start.
             */
            caFile: existingFile("CA file").optional(),
            /** A sidecar's reservations are released by the others this long after it stopped renewing. */
            leaseSeconds: positive.default(10),
            /** Longest a request waits on Redis; slower, the sidecar picks from its own view. */
            timeoutMs: z.number().int().positive().default(50),
            /** Prefix of every key, so that several deployments can share one Redis. */
            keyPrefix: z.string().default("metadata-center:"),
          })
          .superRefine((redis, context) => {
            const urls = typeof redis.url === "string" ? [redis.url] : redis.url;
            // A URL that cannot be read has its own issue already.
            if (urls.some((url) => redisUrlProblem(url) !== undefined)) return;
            const read = urls.map(parseRedisUrl);
            if (redis.caFile !== undefined && !read.some((url) => url.tls)) {
              context.addIssue({ code: "custom", path: ["caFile"], message: "is only read for a rediss:// (TLS) url" });
            }
            if (typeof redis.url === "string") return;
            const [first] = read;
            read.forEach((url, i) => {
              if (url.db !== 0) context.addIssue({ code: "custom", path: ["url", i], message: "names a database: a Redis Cluster has only database 0" });
              else if (first !== undefined && (url.tls !== first.tls || url.username !== first.username || url.password !== first.password)) {
                context.addIssue({ code: "custom", path: ["url", i], message: "differs from the first seed in scheme, user or password: every node of a Cluster gets the first one's" });
              }
            });
          })
          .prefault({}),
      })
      .prefault({}),
    tokenizer: z
      .strictObject({
        /** o200k pools: texts costing more (countingCost) are priced from a sample; 0: estimate all. */
        countWholeUpTo: z.number().int().min(0).default(16_384),
        /**
         * o200k pools: for the pick, texts costing more are priced from a sample of this cost (0: the
         * estimate), then counted as countWholeUpTo says once the routing reply is out. A pool's
         * tokenizer.json counts in its worker thread, before the pick.
         */
        countAtPickUpTo: z.number().int().min(0).default(2_048),
        /** OpenAI's price of one high-detail 1024×1024 image (85 + 4 tiles × 170); open VLMs are in the same range. */
        imageTokens: z.number().int().min(0).default(765),
        /** About 8 s of audio at the 25 tokens/s of Whisper-style encoders (Qwen2-Audio). */
        audioTokens: z.number().int().min(0).default(200),
      })
      .prefault({}),
    inference: z
      .strictObject({
        /** Add `stream_options.include_usage: true` to streaming requests without it (changes what clients receive). */
        forceIncludeUsage: z.boolean().default(false),
      })
      .prefault({}),
    shutdown: z.strictObject({ graceSeconds: z.number().min(0).default(25) }).prefault({}),
    log: z
      .strictObject({
        level: z.enum(logLevels).default("info"),
        /** json for collectors; pretty for a person at a terminal. Takes effect at start. */
        format: z.enum(logFormats).default("json"),
        /** epoch milliseconds, or ISO 8601 UTC. Takes effect at start. */
        time: z.enum(logTimes).default("epoch"),
      })
      .prefault({}),
    pools: z.array(pool).min(1),
  })
  .superRefine((config, context) => {
    if (config.extproc.maxHeldBodyBytes < config.extproc.maxRequestBodyBytes) {
      context.addIssue({
        code: "custom",
        path: ["extproc", "maxHeldBodyBytes"],
        message: `must be at least extproc.maxRequestBodyBytes (${config.extproc.maxRequestBodyBytes}): one request of that size could never be held`,
      });
    }
    if (!isLoopbackHost(config.http.host) && config.http.token === undefined) {
      context.addIssue({
        code: "custom",
        path: ["http", "token"],
        message: `required when http.host (${config.http.host}) is not a loopback address: anyone who reaches the port could write load (set it or METADATA_CENTER_HTTP_TOKEN)`,
      });
    }
    if (config.extproc.maxMessageBytes < leastMessageBytes(config.extproc)) {
      context.addIssue({
        code: "custom",
        path: ["extproc", "maxMessageBytes"],
        message: `must be at least extproc.maxRequestBodyBytes + 1 MiB (${leastMessageBytes(config.extproc)}): a BUFFERED request body arrives in one message`,
      });
    }
    const names = new Set<string>();
    const servedBy = new Map<string, string>();
    config.pools.forEach((p, i) => {
      if (p.dns !== undefined && p.endpoints.length > 0) {
        context.addIssue({ code: "custom", path: ["pools", i, "endpoints"], message: "give either endpoints or dns, not both" });
      }
      if (names.has(p.name)) context.addIssue({ code: "custom", path: ["pools", i, "name"], message: `pool name '${p.name}' is used twice` });
      names.add(p.name);
      p.models.forEach((model, j) => {
        const other = servedBy.get(model);
        if (other !== undefined && other !== p.name) {
          context.addIssue({ code: "custom", path: ["pools", i, "models", j], message: `model '${model}' is already served by pool '${other}'` });
        }
        servedBy.set(model, p.name);
      });
    });
  });

export type Config = z.output<typeof configSchema>;
