// Entry point of gateway/run: starts the gateway in the foreground and stops
// it on SIGTERM or SIGINT.
import { loadConfig, ConfigError } from "./config.js";
import { startGateway, StartupError } from "./server.js";

try {
  const config = loadConfig(process.env);
  const gateway = await startGateway(config);
  console.log(`bridgecore gateway listening on ${gateway.url}`);
  const stop = async () => {
    await gateway.close();
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} catch (e) {
  if (e instanceof ConfigError || e instanceof StartupError) {
    console.error(`bridgecore gateway: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
