/**
 * Connection limits per peer (issue 14, finding 4), pure bookkeeping for the
 * server: how many connections each uid, and each per-VM security context,
 * holds, and whether one more is allowed.
 *
 * - **Per uid** (`--max-connections-per-uid`): with libvirt every QEMU of a
 *   host may run as the same uid (`libvirt-qemu`), so this limit must stay
 *   above what all VMs of a host need together; its default is half of
 *   `--max-connections`, which keeps any one uid from taking every slot.
 * - **Per context** (`--max-connections-per-context`): sVirt and container
 *   runtimes give each VM (pod) its own MCS category pair, a single level such
 *   as `system_u:system_r:svirt_t:s0:c12,c34`. That context names one VM, so
 *   its limit is the one that isolates VMs sharing a uid. Contexts that many
 *   processes share (a range such as `s0-s0:c0.c1023`, a bare `s0`, no MLS
 *   field) are not limited per context: capping them would cap every QEMU of
 *   an unconfined host together.
 *
 * @module
 */

/** A peer as far as the limits are concerned. */
export interface LimitedPeer {
  uid: number;
  /** SO_PEERSEC context, or null without one. */
  context: string | null;
}

/** Options of {@linkcode ConnectionLimits}. */
export interface ConnectionLimitOptions {
  /** Connections one uid may hold at once. */
  perUid: number;
  /** Connections one per-VM security context may hold at once. */
  perContext: number;
}

/**
 * The key under which a context is limited, or null if the context is not a
 * per-instance one. Per-instance: `user:role:type:level` whose level is one
 * sensitivity with a category set (`s0:c1,c2`), no range.
 */
export function perInstanceContext(context: string | null): string | null {
  if (context === null) return null;
  const parts = context.split(":");
  if (parts.length < 5) return null; // no MLS field, or no categories
  const level = parts.slice(3).join(":");
  if (level.includes("-")) return null; // a range: shared by many processes
  const categories = parts.slice(4).join(":");
  // a list of categories (c1,c2); a category range (c0.c1023) is a clearance, not an instance
  return /^c\d+(,c\d+)*$/.test(categories) ? context : null;
}

/** Which limit refused a peer. */
export type LimitRefusal =
  | { limit: "uid"; uid: number; open: number; max: number }
  | { limit: "context"; context: string; open: number; max: number };

/** Counts of open connections by uid and by per-instance context. */
export class ConnectionLimits {
  readonly #opts: ConnectionLimitOptions;
  readonly #byUid = new Map<number, number>();
  readonly #byContext = new Map<string, number>();

  constructor(options: ConnectionLimitOptions) {
    for (const [name, v] of Object.entries(options)) {
      if (!Number.isInteger(v) || v < 1) {
        throw new RangeError(`connection limit ${name} ${v} must be a whole number above 0`);
      }
    }
    this.#opts = { ...options };
  }

  /** Why one more connection of `peer` is refused, or null if it is allowed. */
  check(peer: LimitedPeer): LimitRefusal | null {
    const byUid = this.#byUid.get(peer.uid) ?? 0;
    if (byUid >= this.#opts.perUid) {
      return { limit: "uid", uid: peer.uid, open: byUid, max: this.#opts.perUid };
    }
    const key = perInstanceContext(peer.context);
    if (key !== null) {
      const byContext = this.#byContext.get(key) ?? 0;
      if (byContext >= this.#opts.perContext) {
        return { limit: "context", context: key, open: byContext, max: this.#opts.perContext };
      }
    }
    return null;
  }

  /** Count a connection of `peer` (after it was admitted). */
  add(peer: LimitedPeer): void {
    this.#byUid.set(peer.uid, (this.#byUid.get(peer.uid) ?? 0) + 1);
    const key = perInstanceContext(peer.context);
    if (key !== null) this.#byContext.set(key, (this.#byContext.get(key) ?? 0) + 1);
  }

  /** Forget a connection of `peer` (once per {@linkcode ConnectionLimits.add}). */
  remove(peer: LimitedPeer): void {
    decrement(this.#byUid, peer.uid);
    const key = perInstanceContext(peer.context);
    if (key !== null) decrement(this.#byContext, key);
  }

  /** Open connections of a uid. */
  openByUid(uid: number): number {
    return this.#byUid.get(uid) ?? 0;
  }
}

function decrement<K>(map: Map<K, number>, key: K): void {
  const n = (map.get(key) ?? 0) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

/** One line for the log: which limit refused, with the option that sets it. */
export function describeRefusal(r: LimitRefusal): string {
  return r.limit === "uid"
    ? `uid ${r.uid} has ${r.open} connections open (--max-connections-per-uid ${r.max})`
    : `context ${r.context} has ${r.open} connections open (--max-connections-per-context ${r.max})`;
}

/**
 * File descriptors a daemon needs to hold `connections` connections: each
 * holds its socket and, while a request is in flight, the fd passed with it;
 * `reserved` covers the runtime's own (Deno, Workers, pipes).
 */
export function fdsNeeded(connections: number, reserved = 128): number {
  return 2 * connections + reserved;
}
