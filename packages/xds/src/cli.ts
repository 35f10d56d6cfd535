#!/usr/bin/env node
// The `vmpilot` command. Each subcommand lives in its own module under cli/ and exports a `register` function;
// this file only assembles them, so adding a command never touches another command's code.
import { Command } from "commander";
import { VERSION } from "./index.js";
import { register as registerValidate } from "./cli/validate.js";
import { register as registerToken } from "./cli/token.js";
import { register as registerProxyStatus } from "./cli/proxy-status.js";
import { register as registerServer } from "./cli/server.js";
import { register as registerDiff } from "./cli/diff.js";

type Register = (program: Command) => void;

const COMMANDS: Register[] = [registerValidate, registerToken, registerProxyStatus, registerServer, registerDiff];

const program = new Command("vmpilot")
  .description("Service-mesh control plane for VM fleets: Istio-style config from GitOps directories and Consul, served over xDS v3.")
  .version(VERSION)
  .showHelpAfterError()
  .enablePositionalOptions();

for (const register of COMMANDS) register(program);

await program.parseAsync(process.argv);
