// The gateway's settings, from the environment (docs/gateway.md).
export const MIN_SECRET_LENGTH = 32;

export class ConfigError extends Error {}

export function loadConfig(env) {
  const databaseUrl = env.DATABASE_URL;
  if (!databaseUrl) throw new ConfigError("DATABASE_URL is not set (a libpq URI such as postgresql://gateway@localhost/bridgecore)");
  const secret = env.BRIDGECORE_JWT_SECRET ?? "";
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new ConfigError(`BRIDGECORE_JWT_SECRET must be at least ${MIN_SECRET_LENGTH} characters, the database's bridgecore.jwt_secret`);
  }
  const port = Number(env.PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`PORT must be a port number, got "${env.PORT}"`);
  const maxBodySize = Number(env.MAX_BODY_SIZE ?? 1024 * 1024);
  if (!Number.isInteger(maxBodySize) || maxBodySize < 1) throw new ConfigError(`MAX_BODY_SIZE must be a positive number of bytes, got "${env.MAX_BODY_SIZE}"`);
  // Hot standbys of the database: sync pulls that carry a sync_token go
  // there (docs/gateway.md, "Standbys").
  const standbyUrls = (env.DATABASE_STANDBY_URLS ?? "").split(",").map((u) => u.trim()).filter((u) => u !== "");
  return { databaseUrl, standbyUrls, secret, host: env.HOST || "127.0.0.1", port, maxBodySize };
}
