// The agent logs through the shared vmpilot logger (stderr; JSON lines under systemd). Components take the
// narrow interface below so tests can hand in a collector and assert on what the agent said.
import { createLogger } from "@vmpilot/registry/logger";

export interface Logger {
  error(msg: string): unknown;
  warn(msg: string): unknown;
  info(msg: string): unknown;
  debug(msg: string): unknown;
}

export function agentLogger(component: string): Logger {
  return createLogger(`agent/${component}`);
}

/** Collects messages instead of printing them. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    error: (m) => lines.push(`error: ${m}`),
    warn: (m) => lines.push(`warn: ${m}`),
    info: (m) => lines.push(`info: ${m}`),
    debug: (m) => lines.push(`debug: ${m}`),
  };
}
