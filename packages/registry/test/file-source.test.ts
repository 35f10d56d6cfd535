// FileSource against real files, real chokidar and the real parser. Every wait polls for a condition with a
// generous deadline (the machine is shared and loaded); the few fixed waits only give a *wrong* extra event
// the chance to show up before asserting there was none.
import { expect } from "chai";
import { mkdir, mkdtemp, rename, rm, symlink, unlink, utimes, writeFile, appendFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { FileSource } from "../src/file-source.js";
import { setLogLevel } from "../src/logger.js";
import { configKey, type AnyConfig, type SourceState } from "../src/model.js";
import { until } from "../../../test/helpers/poll.js";

if (!process.env.VMPILOT_LOG_LEVEL) setLogLevel("error");

const FAST = { quiet: 50, max: 500 };

function serviceEntry(name: string, host: string, address = "10.0.0.1", namespace = "default"): string {
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
  hosts: [${host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 80
    name: http
    protocol: HTTP
  endpoints:
  - address: ${address}
`;
}

/** Valid YAML, but `prots` is not a ServiceEntry field: an error on line 10. */
function serviceEntryWithTypo(name: string, host: string): string {
  return serviceEntry(name, host).replace("  ports:\n", "  prots:\n");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function keys(s: SourceState): string[] {
  return s.objects.map((o) => configKey(o)).sort();
}

function find(s: SourceState, key: string): AnyConfig | undefined {
  return s.objects.find((o) => configKey(o) === key);
}

function address(s: SourceState, key: string): string | undefined {
  const o = find(s, key);
  return o?.kind === "ServiceEntry" ? o.spec.endpoints?.[0]?.address : undefined;
}

describe("FileSource", function () {
  this.timeout(60_000);
  let root: string;
  const sources: FileSource[] = [];

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "vmpilot-fs-"));
  });
  afterEach(async () => {
    await Promise.all(sources.splice(0).map((s) => s.stop()));
    await rm(root, { recursive: true, force: true });
  });

  async function started(dirs: string[], opts: { quiet?: number; max?: number; first?: number } = FAST): Promise<{ src: FileSource; changes: () => number }> {
    const src = new FileSource({ dirs, debounceMs: opts });
    sources.push(src);
    let n = 0;
    src.on("change", () => n++);
    await src.start();
    return { src, changes: () => n };
  }

  it("serves the good files at startup when another file is bad, and reports the bad one with its line", async () => {
    await writeFile(path.join(root, "good.yaml"), serviceEntry("good", "good.example.com"));
    await writeFile(path.join(root, "bad.yaml"), serviceEntryWithTypo("bad", "bad.example.com"));
    await writeFile(path.join(root, "notes.txt"), "not config");
    const { src } = await started([root]);
    const s = src.current();
    expect(s.status.synced).to.equal(true);
    expect(keys(s)).to.deep.equal(["ServiceEntry/default/good"]);
    const typo = s.problems.find((p) => p.severity === "error" && /prots/.test(p.message));
    expect(typo, JSON.stringify(s.problems)).to.not.equal(undefined);
    expect(typo!.file).to.equal(path.join(root, "bad.yaml"));
    expect(typo!.line).to.equal(10);
    expect(typo!.column).to.equal(3);
    expect(s.status.lastError).to.match(/bad\.yaml:\d+:\d+: /);
    // Nothing good was ever loaded from bad.yaml, so nothing stale is being served.
    expect(s.status.stale).to.equal(false);
  });

  it("follows create, modify, delete and rename", async () => {
    const { src } = await started([root]);
    expect(src.current().status.synced).to.equal(true);
    expect(keys(src.current())).to.deep.equal([]);

    const a = path.join(root, "a.yaml");
    await writeFile(a, serviceEntry("a", "a.example.com", "10.0.0.1"));
    await until("a created", () => address(src.current(), "ServiceEntry/default/a") === "10.0.0.1");

    await writeFile(a, serviceEntry("a", "a.example.com", "10.0.0.2"));
    await until("a modified", () => address(src.current(), "ServiceEntry/default/a") === "10.0.0.2");

    const b = path.join(root, "sub", "b.yaml");
    await mkdir(path.dirname(b));
    await rename(a, b);
    const moved = await until("a moved to sub/b.yaml", () => {
      const o = find(src.current(), "ServiceEntry/default/a");
      return o?.origin.type === "file" && o.origin.file === b && o;
    });
    expect(moved.origin).to.include({ line: 1, column: 1 });
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a"]);

    await unlink(b);
    await until("a deleted", () => src.current().objects.length === 0);
    expect(src.current().problems).to.deep.equal([]);
  });

  it("takes an editor's atomic save (write a temp file, rename it over) as one change", async () => {
    const file = path.join(root, "svc.yaml");
    await writeFile(file, serviceEntry("svc", "svc.example.com", "10.0.0.1"));
    const { src, changes } = await started([root]);
    const before = changes();

    const tmp = path.join(root, ".svc.yaml.tmp-1234");
    await writeFile(tmp, serviceEntry("svc", "svc.example.com", "10.0.0.9"));
    await rename(tmp, file);
    await until("new content", () => address(src.current(), "ServiceEntry/default/svc") === "10.0.0.9");
    await sleep(4 * FAST.max); // room for a wrong second event
    expect(changes() - before).to.equal(1);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/svc"]);
  });

  it("takes a ConfigMap-style `..data` symlink swap as one change with the new content", async () => {
    // kubelet's AtomicWriter layout: versioned dir, `..data` -> it, top-level symlinks through `..data`.
    const v1 = "..2026_11_22_03_00_00.000000001";
    await mkdir(path.join(root, v1));
    await writeFile(path.join(root, v1, "a.yaml"), serviceEntry("a", "a.example.com", "10.0.1.1"));
    await writeFile(path.join(root, v1, "b.yaml"), serviceEntry("b", "b.example.com", "10.0.1.2"));
    await symlink(v1, path.join(root, "..data"));
    await symlink(path.join("..data", "a.yaml"), path.join(root, "a.yaml"));
    await symlink(path.join("..data", "b.yaml"), path.join(root, "b.yaml"));
    const { src, changes } = await started([root]);
    // Files are read once, through the top-level links, not again through `..data` or the versioned dir.
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a", "ServiceEntry/default/b"]);
    expect(src.current().problems).to.deep.equal([]);
    const before = changes();

    const v2 = "..2026_11_22_03_05_00.000000002";
    await mkdir(path.join(root, v2));
    await writeFile(path.join(root, v2, "a.yaml"), serviceEntry("a", "a.example.com", "10.0.2.1"));
    await writeFile(path.join(root, v2, "b.yaml"), serviceEntry("b", "b.example.com", "10.0.2.2"));
    await symlink(v2, path.join(root, "..data_tmp"));
    await rename(path.join(root, "..data_tmp"), path.join(root, "..data"));
    await rm(path.join(root, v1), { recursive: true });

    await until("both files swapped", () => {
      const s = src.current();
      return address(s, "ServiceEntry/default/a") === "10.0.2.1" && address(s, "ServiceEntry/default/b") === "10.0.2.2";
    });
    await sleep(4 * FAST.max);
    expect(changes() - before).to.equal(1);
    const a = find(src.current(), "ServiceEntry/default/a")!;
    expect(a.origin).to.deep.include({ type: "file", file: path.join(root, "a.yaml") });
  });

  it("follows a configured directory that is a symlink when the link is swapped (git-sync --link)", async () => {
    const rev1 = path.join(root, "rev-1111");
    const rev2 = path.join(root, "rev-2222");
    await mkdir(rev1);
    await mkdir(rev2);
    await writeFile(path.join(rev1, "svc.yaml"), serviceEntry("svc", "svc.example.com", "10.0.1.1"));
    await writeFile(path.join(rev2, "svc.yaml"), serviceEntry("svc", "svc.example.com", "10.0.2.1"));
    const link = path.join(root, "current");
    await symlink("rev-1111", link);
    const { src, changes } = await started([link]);
    expect(address(src.current(), "ServiceEntry/default/svc")).to.equal("10.0.1.1");
    const before = changes();

    await symlink("rev-2222", path.join(root, "current.tmp"));
    await rename(path.join(root, "current.tmp"), link);
    await until("content of the new target", () => address(src.current(), "ServiceEntry/default/svc") === "10.0.2.1");
    expect(src.current().objects[0]!.origin).to.deep.include({ file: path.join(link, "svc.yaml") });

    // The watcher now follows the new target: an edit made only there is seen.
    await writeFile(path.join(rev2, "svc.yaml"), serviceEntry("svc", "svc.example.com", "10.0.2.9"));
    await until("edit in the new target", () => address(src.current(), "ServiceEntry/default/svc") === "10.0.2.9");
    expect(changes() - before).to.be.at.most(2);
  });

  it("treats a half-written file as invalid and applies it once complete", async () => {
    const { src } = await started([root]);
    const file = path.join(root, "half.yaml");
    const full = serviceEntry("half", "half.example.com");
    const cut = full.indexOf("  ports:");
    await writeFile(file, full.slice(0, cut) + "  ports:\n  - number: 80\n    name: ht");
    await until("problems for the truncated file", () => src.current().problems.some((p) => p.file === file && p.severity === "error"));
    expect(src.current().objects).to.deep.equal([]);

    await writeFile(file, full);
    await until("the completed file applies", () => keys(src.current()).includes("ServiceEntry/default/half"));
    expect(src.current().problems).to.deep.equal([]);
  });

  it("keeps a file's last good objects while it is invalid, reports the error line, and applies the fix", async () => {
    const file = path.join(root, "flaky.yaml");
    await writeFile(file, serviceEntry("flaky", "flaky.example.com", "10.0.0.1") + "---\n" + serviceEntry("other", "other.example.com", "10.0.0.5"));
    const { src } = await started([root]);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/flaky", "ServiceEntry/default/other"]);
    const goodObjects = src.current().objects;

    // The second document breaks; the first is still valid, yet the whole file keeps its last good version.
    await writeFile(file, serviceEntry("flaky", "flaky.example.com", "10.0.0.2") + "---\n" + serviceEntryWithTypo("other", "other.example.com"));
    const bad = await until("error reported", () => src.current().problems.find((p) => p.file === file && /prots/.test(p.message)));
    expect(bad.severity).to.equal("error");
    expect(bad.line).to.equal(16 + 10); // line 10 of the second document, which starts after 15 lines and `---`
    const s = src.current();
    expect(s.objects).to.deep.equal(goodObjects);
    expect(address(s, "ServiceEntry/default/flaky")).to.equal("10.0.0.1");
    expect(s.status.stale).to.equal(true);

    await writeFile(file, serviceEntry("flaky", "flaky.example.com", "10.0.0.3") + "---\n" + serviceEntry("other", "other.example.com", "10.0.0.6"));
    await until("fixed file applies", () => address(src.current(), "ServiceEntry/default/flaky") === "10.0.0.3");
    expect(src.current().problems).to.deep.equal([]);
    expect(src.current().status.stale).to.equal(false);
    expect(address(src.current(), "ServiceEntry/default/other")).to.equal("10.0.0.6");
  });

  it("watches two directories and removes a file's objects when it is deleted", async () => {
    const d1 = path.join(root, "one");
    const d2 = path.join(root, "two");
    await mkdir(d1);
    await mkdir(d2);
    await writeFile(path.join(d1, "x.yml"), serviceEntry("x", "x.example.com"));
    await writeFile(path.join(d2, "y.json"), JSON.stringify({
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: "y" },
      spec: { hosts: ["y.example.com"], ports: [{ number: 443, name: "tls", protocol: "TLS" }], resolution: "DNS" },
    }));
    // One of them spelled relative to the working directory, with a trailing slash, as an operator might.
    const { src } = await started([path.relative(process.cwd(), d1) + path.sep, d2]);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/x", "ServiceEntry/default/y"]);
    expect(path.resolve((find(src.current(), "ServiceEntry/default/x")!.origin as { file: string }).file)).to.equal(path.join(d1, "x.yml"));

    await writeFile(path.join(d2, "z.yaml"), serviceEntry("z", "z.example.com"));
    await until("z in the second dir", () => keys(src.current()).includes("ServiceEntry/default/z"));
    await unlink(path.join(d1, "x.yml"));
    await until("x removed", () => !keys(src.current()).includes("ServiceEntry/default/x"));
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/y", "ServiceEntry/default/z"]);
  });

  it("re-parses only the file that changed, and emits nothing for a touch that keeps the content", async () => {
    for (let i = 0; i < 200; i++) {
      await writeFile(path.join(root, `svc-${String(i).padStart(3, "0")}.yaml`), serviceEntry(`svc-${i}`, `svc-${i}.example.com`));
    }
    const { src, changes } = await started([root]);
    const before = new Map(src.current().objects.map((o) => [configKey(o), o]));
    expect(before.size).to.equal(200);
    const c0 = changes();

    // Same bytes, new mtime: read again, hash equal, no parse, no event.
    const touched = path.join(root, "svc-007.yaml");
    const later = new Date(Date.now() + 5000);
    await utimes(touched, later, later);
    await writeFile(path.join(root, "svc-042.yaml"), serviceEntry("svc-42", "svc-42.example.com", "10.9.9.9"));
    await until("svc-42 updated", () => address(src.current(), "ServiceEntry/default/svc-42") === "10.9.9.9");
    await sleep(4 * FAST.max);
    expect(changes() - c0).to.equal(1);

    let same = 0;
    for (const o of src.current().objects) if (before.get(configKey(o)) === o) same++;
    // Every object but the edited one is the very object parsed at startup.
    expect(same).to.equal(199);
  });

  it("takes a burst of 100 rewritten files (a git pull) as one change, with the default quiet periods", async () => {
    const name = (i: number): string => path.join(root, `svc-${String(i).padStart(3, "0")}.yaml`);
    for (let i = 0; i < 100; i++) await writeFile(name(i), serviceEntry(`svc-${i}`, `svc-${i}.example.com`));
    // Default quiet periods (first 60 ms, then 100 ms); a cap high enough that only the quiet periods decide.
    const { src, changes } = await started([root], { max: 10_000 });
    const c0 = changes();
    // As git checks files out: unlink, then write the new version, one file after the other.
    for (let i = 0; i < 100; i++) {
      await unlink(name(i));
      await writeFile(name(i), serviceEntry(`svc-${i}`, `svc-${i}.example.com`, "10.2.2.2"));
    }
    await until("every file's new version", () => src.current().objects.every((o) => o.kind === "ServiceEntry" && o.spec.endpoints?.[0]?.address === "10.2.2.2"));
    await sleep(1000);
    expect(src.current().objects).to.have.length(100);
    expect(changes() - c0, "one change for the whole burst, not one per file").to.equal(1);
  });

  it("serves a second write that follows the first within chokidar's 50 ms change throttle", async () => {
    // chokidar reports no second `change` for a path within 50 ms of the last one; a scan sooner than that after
    // the first event would read the first version and never hear of the second.
    const file = path.join(root, "svc.yaml");
    await writeFile(file, serviceEntry("svc", "svc.example.com", "10.0.0.1"));
    const { src } = await started([root], {});
    for (const [first, second] of [["10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5"], ["10.0.0.6", "10.0.0.7"]] as const) {
      await writeFile(file, serviceEntry("svc", "svc.example.com", first));
      await sleep(35);
      await writeFile(file, serviceEntry("svc", "svc.example.com", second));
      await until(`the second write (${second})`, () => address(src.current(), "ServiceEntry/default/svc") === second, 5000);
      await sleep(300);
    }
  });

  it("reports the git HEAD commit of a checkout as its revision", async () => {
    const sha = "0123456789abcdef0123456789abcdef01234567";
    await mkdir(path.join(root, ".git", "refs", "heads"), { recursive: true });
    await writeFile(path.join(root, ".git", "HEAD"), "ref: refs/heads/main\n");
    await writeFile(path.join(root, ".git", "packed-refs"), `# pack-refs with: peeled fully-peeled sorted\n${sha} refs/heads/main\n`);
    const conf = path.join(root, "mesh");
    await mkdir(conf);
    await writeFile(path.join(conf, "a.yaml"), serviceEntry("a", "a.example.com"));
    const { src } = await started([conf]);
    expect(src.current().status.revision).to.equal(sha);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a"]);

    // A new commit (loose ref wins over packed-refs) plus the files it changes: one rescan sees both.
    const sha2 = "89abcdef0123456789abcdef0123456789abcdef";
    await writeFile(path.join(root, ".git", "refs", "heads", "main"), `${sha2}\n`);
    await appendFile(path.join(conf, "a.yaml"), "# touched by commit 2\n");
    await until("revision follows HEAD", () => src.current().status.revision === sha2);
  });

  it("keeps serving a configured directory that disappears (unmounted, deleted by mistake), marked stale", async () => {
    const keep = path.join(root, "keep");
    const gone = path.join(root, "gone");
    await mkdir(keep);
    await mkdir(path.join(gone, "sub"), { recursive: true });
    await writeFile(path.join(keep, "a.yaml"), serviceEntry("a", "a.example.com"));
    await writeFile(path.join(gone, "sub", "b.yaml"), serviceEntry("b", "b.example.com"));
    await writeFile(path.join(gone, "c.yaml"), serviceEntry("c", "c.example.com"));
    const { src } = await started([keep, gone]);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a", "ServiceEntry/default/b", "ServiceEntry/default/c"]);

    // Deleting a subdirectory is deleting its files...
    await rm(path.join(gone, "sub"), { recursive: true });
    await until("b removed", () => !keys(src.current()).includes("ServiceEntry/default/b"));
    expect(src.current().status.stale).to.equal(false);
    // ...but a configured directory vanishing is an outage, not an intent: its objects stay.
    await rm(gone, { recursive: true });
    await until("error reported", () => src.current().status.lastError?.includes(gone));
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a", "ServiceEntry/default/c"]);
    expect(src.current().status.stale).to.equal(true);
  });

  it("reports a missing directory in status and serves the others", async () => {
    const ok = path.join(root, "ok");
    await mkdir(ok);
    await writeFile(path.join(ok, "a.yaml"), serviceEntry("a", "a.example.com"));
    const { src } = await started([ok, path.join(root, "missing")]);
    expect(src.current().status.synced).to.equal(true);
    expect(src.current().status.lastError).to.match(/missing/);
    expect(keys(src.current())).to.deep.equal(["ServiceEntry/default/a"]);
  });
});
