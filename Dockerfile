# metadata-center: build with the dev toolchain, run with production dependencies only, as a
# non-root user. Build from the repository root: docker build -t metadata-center .
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
# Install scripts are skipped: the only ones (esbuild, buf) serve tests and code generation.
RUN npm ci --ignore-scripts
COPY src ./src
RUN npm run build && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    # In a pod or container the ports must be reachable from outside the loopback
    # (kubelet probes, Prometheus, Envoy in another container).
    METADATA_CENTER_EXTPROC_HOST=0.0.0.0 \
    METADATA_CENTER_HEALTH_HOST=0.0.0.0 \
    METADATA_CENTER_HTTP_HOST=0.0.0.0
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The embedded default config (`serve` without --config).
COPY deploy/default.yaml ./deploy/default.yaml
# The image's unprivileged user (uid 1000).
USER node
# ext_proc gRPC, gRPC health, HTTP API and /metrics.
EXPOSE 9002 9003 9090
ENTRYPOINT ["node", "dist/main.js"]
CMD ["serve"]
