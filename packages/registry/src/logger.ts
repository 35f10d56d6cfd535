// One logger for every vmpilot process. Logs go to stderr so that commands' own output on stdout
// (`vmpilot validate`, `vmpilot-agent bootstrap`) stays machine-readable. JSON lines when stderr is not a
// terminal (systemd, containers, log shippers), a short human format when it is.
//
//   VMPILOT_LOG_LEVEL   error | warn | info (default) | http | verbose | debug | silly
//   VMPILOT_LOG_FORMAT  json | pretty (overrides the terminal check)
import winston from "winston";

export type LogLevel = "error" | "warn" | "info" | "http" | "verbose" | "debug" | "silly";
export type Logger = winston.Logger;

const LEVELS: readonly LogLevel[] = ["error", "warn", "info", "http", "verbose", "debug", "silly"];

let root: winston.Logger | undefined;

function isLevel(s: string | undefined): s is LogLevel {
  return s !== undefined && (LEVELS as readonly string[]).includes(s);
}

function prettyFormat(): winston.Logform.Format {
  return winston.format.combine(
    winston.format.errors({ stack: true }),
    winston.format.timestamp({ format: "HH:mm:ss.SSS" }),
    winston.format.colorize({ level: true }),
    winston.format.printf((info) => {
      const { timestamp, level, message, component, stack, ...rest } = info;
      const where = component ? ` [${String(component)}]` : "";
      const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : "";
      const trace = typeof stack === "string" ? `\n${stack}` : "";
      return `${String(timestamp)} ${level}${where} ${String(message)}${extra}${trace}`;
    }),
  );
}

function jsonFormat(): winston.Logform.Format {
  return winston.format.combine(winston.format.errors({ stack: true }), winston.format.timestamp(), winston.format.json());
}

function rootLogger(): winston.Logger {
  if (root) return root;
  const envLevel = process.env.VMPILOT_LOG_LEVEL?.trim().toLowerCase() || undefined;
  const envFormat = process.env.VMPILOT_LOG_FORMAT?.trim().toLowerCase() || undefined;
  const json = envFormat === "json" || (envFormat !== "pretty" && !process.stderr.isTTY);
  root = winston.createLogger({
    level: isLevel(envLevel) ? envLevel : "info",
    format: json ? jsonFormat() : prettyFormat(),
    transports: [new winston.transports.Console({ stderrLevels: [...LEVELS] })],
  });
  if (envLevel !== undefined && !isLevel(envLevel)) {
    root.warn(`VMPILOT_LOG_LEVEL=${envLevel} is not one of ${LEVELS.join(", ")}; using info`);
  }
  return root;
}

/** A logger whose lines carry `component` (e.g. "file-source", "registry", "ads"). */
export function createLogger(component: string): Logger {
  return rootLogger().child({ component });
}

/** Changes the level of every logger at runtime (tests quieten it; a SIGHUP reload may change it). */
export function setLogLevel(level: LogLevel): void {
  rootLogger().level = level;
}
