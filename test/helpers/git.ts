// Real git checkouts for tests of what the server reads from them (revision, HEAD watch, diff, CI snippets).
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** git with an identity and no signing, whatever the machine's global config says; resolves with stdout, trimmed. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("git", ["-c", "user.name=vmpilot test", "-c", "user.email=test@vmpilot.invalid", "-c", "commit.gpgsign=false", ...args], { cwd });
  return stdout.trim();
}

/** Skips the calling test or suite, saying why, when there is no git binary. */
export async function requireGit(ctx: Mocha.Context): Promise<void> {
  try {
    await run("git", ["--version"]);
  } catch {
    console.log("      (skipped: no git binary)");
    ctx.skip();
  }
}
