/**
 * The loaded SELinux policy's ioctl extended permissions, read from the
 * binary policy image (what `/sys/fs/selinux/policy` exports), and the
 * kernel's ioctl-command decision computed from them. Pure: bytes in, values
 * out; no I/O here.
 *
 * ## Why
 *
 * For an `ioctl(2)` the kernel (security/selinux/hooks.c `ioctl_has_perm`)
 * checks more than the `ioctl` permission that `/sys/fs/selinux/access`
 * answers: `avc_has_extended_perms()` also applies the policy's ioctl
 * extended permissions (`allowxperm`, `auditallowxperm`, `dontauditxperm`,
 * policy version 30 and later). Once any such rule exists for the (source
 * type, target type, class), only the commands listed by `allowxperm` rules
 * pass. No interface asks the kernel for that part (selinuxfs has none,
 * libselinux has none), so prhelperd reads the rules from the policy image
 * and repeats the kernel's computation (security/selinux/ss/services.c
 * `context_struct_compute_av`, `services_compute_xperms_drivers`,
 * `services_compute_xperms_decision`; security/selinux/avc.c
 * `avc_has_extended_perms`) for the one command it issues, SG_IO (0x2285).
 *
 * ## The format
 *
 * The image is read front to back exactly as the kernel's `policydb_read()`
 * reads it (security/selinux/ss/policydb.c; libsepol's policydb.c for the
 * same versions), for the SELinux target ("SE Linux"), versions 24
 * (bounds) to 35 (neveraudit). Every section is parsed, and the read must end
 * exactly at the end of the image: a layout this parser does not understand
 * is an error, never a guess. Only what the decision needs is kept: class and
 * type names, booleans, the ioctl xperm entries of the unconditional table
 * and of the conditional lists (policy version 34), and the type→attribute
 * map.
 *
 * @module
 */

/** `POLICYDB_MAGIC` (also selinuxfs' `f_type`). */
export const POLICYDB_MAGIC = 0xf97cff8c;
/** Oldest policy version parsed (POLICYDB_VERSION_BOUNDARY). */
export const MIN_POLICY_VERSION = 24;
/** Newest policy version parsed (POLICYDB_VERSION_NEVERAUDIT). */
export const MAX_POLICY_VERSION = 35;
/** The SG_IO ioctl command, as the kernel hands it to the LSM (`(u16) cmd`). */
export const SG_IO_COMMAND = 0x2285;

const V_FILENAME_TRANS = 25;
const V_ROLETRANS = 26;
const V_NEW_OBJECT_DEFAULTS = 27;
const V_DEFAULT_TYPE = 28;
const V_CONSTRAINT_NAMES = 29;
const V_XPERMS_IOCTL = 30;
const V_INFINIBAND = 31;
const V_COMP_FTRANS = 33;
const V_COND_XPERMS = 34;
const V_NEVERAUDIT = 35;

const CONFIG_MLS = 1;
const SYM_NUM = 8;

// avtab_key.specified
const AVTAB_AV = 0x0007;
const AVTAB_TYPE = 0x0070;
const AVTAB_XPERMS_ALLOWED = 0x0100;
const AVTAB_XPERMS_AUDITALLOW = 0x0200;
const AVTAB_XPERMS_DONTAUDIT = 0x0400;
const AVTAB_XPERMS = 0x0700;
const AVTAB_ENABLED = 0x8000;

/** `avtab_extended_perms.specified`: a 256-bit map of functions of one driver. */
export const XPERMS_IOCTLFUNCTION = 0x01;
/** `avtab_extended_perms.specified`: a 256-bit map of whole drivers. */
export const XPERMS_IOCTLDRIVER = 0x02;

// type_datum properties (kernel policy)
const TYPEDATUM_PROPERTY_PRIMARY = 0x0001;
const TYPEDATUM_PROPERTY_ATTRIBUTE = 0x0002;

// constraint expression node types
const CEXPR_NOT = 1;
const CEXPR_AND = 2;
const CEXPR_OR = 3;
const CEXPR_ATTR = 4;
const CEXPR_NAMES = 5;

// conditional expression node types
const COND_BOOL = 1;
const COND_NOT = 2;
const COND_OR = 3;
const COND_AND = 4;
const COND_XOR = 5;
const COND_EQ = 6;
const COND_NEQ = 7;

// ocontext kinds, in file order
const OCON_ISID = 0;
const OCON_FS = 1;
const OCON_PORT = 2;
const OCON_NETIF = 3;
const OCON_NODE = 4;
const OCON_FSUSE = 5;
const OCON_NODE6 = 6;
const OCON_IBPKEY = 7;
const OCON_IBENDPORT = 8;

/** The image is not a policy this parser understands; names the offset and the field. */
export class PolicyFormatError extends Error {
  /** Byte offset in the image where the problem was found. */
  readonly offset: number;

  /** `message` names the field; `offset` is where it was read. */
  constructor(message: string, offset: number) {
    super(`binary policy, offset ${offset}: ${message}`);
    this.name = "PolicyFormatError";
    this.offset = offset;
  }
}

/** One ioctl extended-permission entry of the loaded policy. */
export interface IoctlXpermEntry {
  /** Source type or attribute value (1-based). */
  source: number;
  /** Target type or attribute value. */
  target: number;
  /** Class value. */
  tclass: number;
  /** Which rule kind made it. */
  rule: "allowxperm" | "auditallowxperm" | "dontauditxperm";
  /** {@linkcode XPERMS_IOCTLFUNCTION}, {@linkcode XPERMS_IOCTLDRIVER}, or another value as read. */
  kind: number;
  /** The driver (high byte of the command) for IOCTLFUNCTION entries. */
  driver: number;
  /** The 256-bit map (8 × 32 bits): functions of `driver`, or drivers. */
  perms: Uint32Array;
}

/** Offsets of some sections, for diagnostics and for tests that build variants of an image. */
export interface PolicySections {
  /** The avtab's entry count (u32), followed by its entries. */
  avtab: number;
  /** The conditional list's node count (u32). */
  condList: number;
  /** The end of the image. */
  end: number;
}

/** What {@linkcode parseBinaryPolicy} keeps of a policy image. */
export interface BinaryPolicy {
  /** Policy version (24..35). */
  version: number;
  /** The MLS configuration bit. */
  mls: boolean;
  /** Class name → value. */
  classes: ReadonlyMap<string, number>;
  /** Type name (primary types, aliases and attributes) → value. */
  types: ReadonlyMap<string, number>;
  /** Values that are attributes. */
  attributes: ReadonlySet<number>;
  /** Boolean name → value and current state. */
  booleans: ReadonlyMap<string, { value: number; state: boolean }>;
  /** Number of type values (`p_types.nprim`). */
  typeCount: number;
  /** Number of avtab entries, unconditional and conditional. */
  avtabEntries: number;
  /** Every ioctl xperm entry in force: unconditional, and conditional ones whose branch is enabled. */
  ioctlXperms: readonly IoctlXpermEntry[];
  /** Section offsets. */
  sections: PolicySections;
  /** The type values whose rules apply to a type (its attributes and itself), 1-based. */
  typeAttributes(typeValue: number): ReadonlySet<number>;
}

class Reader {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  at = 0;
  readonly #decoder = new TextDecoder("utf-8", { fatal: false });

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(what: string, at = this.at): never {
    throw new PolicyFormatError(what, at);
  }

  need(n: number, what: string): void {
    if (n < 0 || this.at + n > this.bytes.length) {
      this.fail(`${what}: needs ${n} bytes, ${this.bytes.length - this.at} left`);
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.at++);
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.at, true);
    this.at += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }

  skip(n: number, what: string): void {
    this.need(n, what);
    this.at += n;
  }

  /** A count of items each at least `minBytes` long: bounded by what is left. */
  count(what: string, minBytes: number): number {
    const at = this.at;
    const n = this.u32(what);
    if (n * minBytes > this.bytes.length - this.at) {
      this.fail(`${what} ${n} cannot fit in the ${this.bytes.length - this.at} bytes left`, at);
    }
    return n;
  }

  string(len: number, what: string): string {
    this.need(len, what);
    const s = this.#decoder.decode(this.bytes.subarray(this.at, this.at + len));
    this.at += len;
    return s;
  }
}

/** ebitmap: u32 mapunit (64), u32 highbit, u32 count, count × (u32 startbit, u64 map). */
function readEbitmap(r: Reader, what: string, collect: boolean): number[] | null {
  const at = r.at;
  const mapunit = r.u32(`${what} ebitmap map size`);
  const highbit = r.u32(`${what} ebitmap high bit`);
  const count = r.count(`${what} ebitmap node count`, 12);
  if (mapunit !== 64) r.fail(`${what} ebitmap map size ${mapunit} is not 64`, at);
  if (highbit % 64 !== 0) r.fail(`${what} ebitmap high bit ${highbit} is not a multiple of 64`, at);
  if (highbit === 0 && count !== 0) r.fail(`${what} ebitmap: ${count} nodes with high bit 0`, at);
  const bits: number[] | null = collect ? [] : null;
  let next = 0;
  for (let i = 0; i < count; i++) {
    const startAt = r.at;
    const start = r.u32(`${what} ebitmap start bit`);
    if (start % 64 !== 0 || start < next || start + 64 > highbit) {
      r.fail(`${what} ebitmap node start bit ${start} out of order or range`, startAt);
    }
    next = start + 64;
    r.need(8, `${what} ebitmap map`);
    if (bits) {
      const lo = r.view.getUint32(r.at, true);
      const hi = r.view.getUint32(r.at + 4, true);
      for (let b = 0; b < 32; b++) if ((lo >>> b) & 1) bits.push(start + b);
      for (let b = 0; b < 32; b++) if ((hi >>> b) & 1) bits.push(start + 32 + b);
    }
    r.at += 8;
  }
  return bits;
}

/** MLS level: u32 sensitivity, ebitmap categories. */
function skipLevel(r: Reader, what: string): void {
  r.u32(`${what} sensitivity`);
  readEbitmap(r, `${what} categories`, false);
}

/** MLS range: u32 items (1 or 2), items × u32 sensitivity, then one or two category ebitmaps. */
function skipRange(r: Reader, what: string): void {
  const at = r.at;
  const items = r.u32(`${what} range items`);
  if (items < 1 || items > 2) r.fail(`${what} range has ${items} levels`, at);
  r.skip(4 * items, `${what} range sensitivities`);
  readEbitmap(r, `${what} range low categories`, false);
  if (items > 1) readEbitmap(r, `${what} range high categories`, false);
}

/** context: u32 user, role, type, then an MLS range. */
function skipContext(r: Reader, what: string): void {
  r.skip(12, `${what} context`);
  skipRange(r, `${what} context`);
}

function skipPerms(r: Reader, n: number, what: string): void {
  for (let i = 0; i < n; i++) {
    const len = r.u32(`${what} permission name length`);
    r.skip(4, `${what} permission value`);
    r.skip(len, `${what} permission name`);
  }
}

function skipConstraints(
  r: Reader,
  options: { count: number; version: number; what: string },
): void {
  const { count, version, what } = options;
  for (let i = 0; i < count; i++) {
    r.skip(4, `${what} constraint permissions`);
    const nexpr = r.count(`${what} constraint expression count`, 12);
    let depth = -1;
    for (let j = 0; j < nexpr; j++) {
      const at = r.at;
      const type = r.u32(`${what} constraint expression type`);
      r.skip(8, `${what} constraint attribute and operator`);
      if (type === CEXPR_NOT) {
        if (depth < 0) r.fail(`${what} constraint: NOT without an operand`, at);
      } else if (type === CEXPR_AND || type === CEXPR_OR) {
        if (depth < 1) r.fail(`${what} constraint: AND/OR without two operands`, at);
        depth--;
      } else if (type === CEXPR_ATTR) {
        depth++;
      } else if (type === CEXPR_NAMES) {
        depth++;
        readEbitmap(r, `${what} constraint names`, false);
        if (version >= V_CONSTRAINT_NAMES) {
          readEbitmap(r, `${what} constraint type set`, false);
          readEbitmap(r, `${what} constraint negated type set`, false);
          r.skip(4, `${what} constraint type set flags`);
        }
      } else {
        r.fail(`${what} constraint expression type ${type} unknown`, at);
      }
    }
    if (depth !== 0) r.fail(`${what} constraint expression is not well formed`);
  }
}

interface Symbols {
  classes: Map<string, number>;
  types: Map<string, number>;
  attributes: Set<number>;
  booleans: Map<number, { name: string; state: boolean }>;
  typeCount: number;
  boolCount: number;
}

function readSymbols(r: Reader, version: number): Symbols {
  const out: Symbols = {
    classes: new Map(),
    types: new Map(),
    attributes: new Set(),
    booleans: new Map(),
    typeCount: 0,
    boolCount: 0,
  };
  const names = ["common", "class", "role", "type", "user", "boolean", "sensitivity", "category"];
  for (let sym = 0; sym < SYM_NUM; sym++) {
    const what = names[sym];
    const nprim = r.u32(`${what} table size`);
    const nel = r.count(`${what} table entry count`, 8);
    if (sym === 3) out.typeCount = nprim;
    if (sym === 5) out.boolCount = nprim;
    for (let i = 0; i < nel; i++) {
      switch (sym) {
        case 0: { // common: len, value, nprim, nel; key; perms
          const len = r.u32("common name length");
          r.skip(8, "common value and permission count");
          const nperm = r.count("common permission entries", 8);
          r.skip(len, "common name");
          skipPerms(r, nperm, "common");
          break;
        }
        case 1: { // class: len, len2, value, nprim, nel, ncons; key; common key; perms; constraints
          const len = r.u32("class name length");
          const len2 = r.u32("class common name length");
          const value = r.u32("class value");
          r.skip(4, "class permission count");
          const nperm = r.count("class permission entries", 8);
          const ncons = r.count("class constraint count", 8);
          const name = r.string(len, "class name");
          r.skip(len2, "class common name");
          skipPerms(r, nperm, `class ${name}`);
          skipConstraints(r, { count: ncons, version, what: `class ${name}` });
          const nvt = r.count(`class ${name} validatetrans count`, 8);
          skipConstraints(r, { count: nvt, version, what: `class ${name} validatetrans` });
          if (version >= V_NEW_OBJECT_DEFAULTS) r.skip(12, `class ${name} defaults`);
          if (version >= V_DEFAULT_TYPE) r.skip(4, `class ${name} default type`);
          out.classes.set(name, value);
          break;
        }
        case 2: { // role: len, value, bounds; key; dominates; types
          const len = r.u32("role name length");
          r.skip(8, "role value and bounds");
          r.skip(len, "role name");
          readEbitmap(r, "role dominates", false);
          readEbitmap(r, "role types", false);
          break;
        }
        case 3: { // type: len, value, properties, bounds; key
          const len = r.u32("type name length");
          const value = r.u32("type value");
          const properties = r.u32("type properties");
          r.skip(4, "type bounds");
          const name = r.string(len, "type name");
          out.types.set(name, value);
          if (
            (properties & TYPEDATUM_PROPERTY_ATTRIBUTE) !== 0 &&
            (properties & TYPEDATUM_PROPERTY_PRIMARY) !== 0
          ) {
            out.attributes.add(value);
          }
          break;
        }
        case 4: { // user: len, value, bounds; key; roles; range; default level
          const len = r.u32("user name length");
          r.skip(8, "user value and bounds");
          r.skip(len, "user name");
          readEbitmap(r, "user roles", false);
          skipRange(r, "user");
          skipLevel(r, "user default level");
          break;
        }
        case 5: { // bool: value, state, len; key
          const value = r.u32("boolean value");
          const stateAt = r.at;
          const state = r.u32("boolean state");
          if (state > 1) r.fail(`boolean state ${state} is not 0 or 1`, stateAt);
          const len = r.u32("boolean name length");
          const name = r.string(len, "boolean name");
          out.booleans.set(value, { name, state: state === 1 });
          break;
        }
        case 6: { // sensitivity: len, isalias; key; level
          const len = r.u32("sensitivity name length");
          r.skip(4, "sensitivity alias flag");
          r.skip(len, "sensitivity name");
          skipLevel(r, "sensitivity");
          break;
        }
        case 7: { // category: len, value, isalias; key
          const len = r.u32("category name length");
          r.skip(8, "category value and alias flag");
          r.skip(len, "category name");
          break;
        }
      }
    }
  }
  return out;
}

/** One avtab entry: 4 × u16 key, then 8 × u32 + 2 bytes for xperms or one u32. */
function readAvtabEntry(
  r: Reader,
  options: { version: number; conditional: boolean; sink: IoctlXpermEntry[] | null },
): void {
  const at = r.at;
  const source = r.u16("avtab source type");
  const target = r.u16("avtab target type");
  const tclass = r.u16("avtab class");
  const specified = r.u16("avtab specifier");
  const kinds = specified & ~AVTAB_ENABLED;
  if ((kinds & ~(AVTAB_AV | AVTAB_TYPE | AVTAB_XPERMS)) !== 0 || popcount(kinds) !== 1) {
    r.fail(`avtab specifier 0x${specified.toString(16)} is not exactly one known kind`, at);
  }
  if ((kinds & AVTAB_XPERMS) === 0) {
    r.skip(4, "avtab data");
    return;
  }
  if (options.version < V_XPERMS_IOCTL) {
    r.fail(`xperm entry in a version ${options.version} policy`, at);
  }
  if (options.conditional && options.version < V_COND_XPERMS) {
    r.fail(`conditional xperm entry in a version ${options.version} policy`, at);
  }
  const kind = r.u8("xperm kind");
  const driver = r.u8("xperm driver");
  r.need(32, "xperm map");
  const perms = new Uint32Array(8);
  for (let i = 0; i < 8; i++) perms[i] = r.view.getUint32(r.at + 4 * i, true);
  r.at += 32;
  options.sink?.push({
    source,
    target,
    tclass,
    rule: kinds === AVTAB_XPERMS_ALLOWED
      ? "allowxperm"
      : kinds === AVTAB_XPERMS_AUDITALLOW
      ? "auditallowxperm"
      : kinds === AVTAB_XPERMS_DONTAUDIT
      ? "dontauditxperm"
      : r.fail(`xperm specifier 0x${kinds.toString(16)}`, at),
    kind,
    driver,
    perms,
  });
}

function popcount(v: number): number {
  let n = 0;
  for (let x = v; x !== 0; x &= x - 1) n++;
  return n;
}

/** Evaluate a conditional expression (reverse Polish) as the kernel's cond_evaluate_expr. */
function evaluateCondition(
  expr: readonly { type: number; bool: number }[],
  booleans: ReadonlyMap<number, { state: boolean }>,
): boolean | null {
  const stack: boolean[] = [];
  for (const e of expr) {
    if (e.type === COND_BOOL) {
      const b = booleans.get(e.bool);
      if (b === undefined) return null;
      stack.push(b.state);
      continue;
    }
    if (e.type === COND_NOT) {
      if (stack.length < 1) return null;
      stack.push(!stack.pop()!);
      continue;
    }
    if (stack.length < 2) return null;
    const b2 = stack.pop()!;
    const b1 = stack.pop()!;
    switch (e.type) {
      case COND_OR:
        stack.push(b1 || b2);
        break;
      case COND_AND:
        stack.push(b1 && b2);
        break;
      case COND_XOR:
      case COND_NEQ:
        stack.push(b1 !== b2);
        break;
      case COND_EQ:
        stack.push(b1 === b2);
        break;
      default:
        return null;
    }
  }
  return stack.length === 1 ? stack[0] : null;
}

function readCondList(
  r: Reader,
  options: { version: number; symbols: Symbols; sink: IoctlXpermEntry[] },
): number {
  const { version, symbols, sink } = options;
  const nodes = r.count("conditional node count", 16);
  let entries = 0;
  for (let i = 0; i < nodes; i++) {
    const nodeAt = r.at;
    const curState = r.u32("conditional current state");
    const nexpr = r.count("conditional expression length", 8);
    const expr: { type: number; bool: number }[] = [];
    for (let j = 0; j < nexpr; j++) {
      const at = r.at;
      const type = r.u32("conditional expression type");
      const bool = r.u32("conditional expression boolean");
      if (type < COND_BOOL || type > COND_NEQ) r.fail(`conditional operator ${type} unknown`, at);
      if (bool > symbols.boolCount) r.fail(`conditional boolean ${bool} unknown`, at);
      expr.push({ type, bool });
    }
    const state = evaluateCondition(expr, symbols.booleans);
    if (state === null) r.fail("conditional expression cannot be evaluated", nodeAt);
    if ((curState !== 0) !== state) {
      r.fail(
        `conditional node's recorded state ${curState} differs from its expression (${state})`,
        nodeAt,
      );
    }
    for (const branch of [true, false]) {
      const n = r.count("conditional rule count", 12);
      entries += n;
      const enabled = branch === state;
      for (let k = 0; k < n; k++) {
        readAvtabEntry(r, { version, conditional: true, sink: enabled ? sink : null });
      }
    }
  }
  return entries;
}

function skipOcontexts(r: Reader, options: { version: number; oconNum: number }): void {
  for (let i = 0; i < options.oconNum; i++) {
    const n = r.count(`ocontext ${i} count`, 8);
    for (let j = 0; j < n; j++) {
      switch (i) {
        case OCON_ISID:
          r.skip(4, "initial SID");
          skipContext(r, "initial SID");
          break;
        case OCON_FS:
        case OCON_NETIF: {
          const len = r.u32("fs/netif name length");
          r.skip(len, "fs/netif name");
          skipContext(r, "fs/netif");
          skipContext(r, "fs/netif default");
          break;
        }
        case OCON_PORT:
          r.skip(12, "port protocol and range");
          skipContext(r, "port");
          break;
        case OCON_NODE:
          r.skip(8, "node address and mask");
          skipContext(r, "node");
          break;
        case OCON_FSUSE: {
          r.skip(4, "fs_use behavior");
          const len = r.u32("fs_use name length");
          r.skip(len, "fs_use name");
          skipContext(r, "fs_use");
          break;
        }
        case OCON_NODE6:
          r.skip(32, "node6 address and mask");
          skipContext(r, "node6");
          break;
        case OCON_IBPKEY:
          r.skip(16, "ibpkey subnet prefix and range");
          skipContext(r, "ibpkey");
          break;
        case OCON_IBENDPORT: {
          const len = r.u32("ibendport name length");
          r.skip(4, "ibendport port");
          r.skip(len, "ibendport name");
          skipContext(r, "ibendport");
          break;
        }
        default:
          r.fail(`ocontext kind ${i} unknown`);
      }
    }
  }
}

/** The image's header: magic, target, version (in range) and table sizes (matching it). */
function readHeader(r: Reader): { version: number; config: number; oconNum: number } {
  const magic = r.u32("magic");
  if (magic !== POLICYDB_MAGIC) r.fail(`magic 0x${magic.toString(16)} is not 0xf97cff8c`, 0);
  const len = r.u32("target string length");
  if (len === 0 || len > 32) r.fail(`target string length ${len}`, 4);
  const target = r.string(len, "target string");
  if (target !== "SE Linux") r.fail(`target "${target}" is not "SE Linux"`, 8);
  const versionAt = r.at;
  const version = r.u32("version");
  if (version < MIN_POLICY_VERSION || version > MAX_POLICY_VERSION) {
    r.fail(
      `policy version ${version} is outside ${MIN_POLICY_VERSION}..${MAX_POLICY_VERSION}`,
      versionAt,
    );
  }
  const config = r.u32("config");
  const symNum = r.u32("symbol table count");
  const oconNum = r.u32("ocontext table count");
  const wantOcon = version >= V_INFINIBAND ? 9 : 7;
  if (symNum !== SYM_NUM || oconNum !== wantOcon) {
    r.fail(
      `table sizes (${symNum},${oconNum}) are not (${SYM_NUM},${wantOcon}) for version ${version}`,
      versionAt + 8,
    );
  }
  return { version, config, oconNum };
}

/** The filename transitions (their layout changed with version 33), skipped. */
function skipFilenameTransitions(r: Reader, version: number): void {
  const nft = r.count("filename transition count", 8);
  for (let i = 0; i < nft; i++) {
    const nameLen = r.u32("filename transition name length");
    r.skip(nameLen, "filename transition name");
    if (version < V_COMP_FTRANS) {
      r.skip(16, "filename transition types");
    } else {
      r.skip(8, "filename transition target and class");
      const ndatum = r.count("filename transition datum count", 16);
      if (ndatum === 0) r.fail("filename transition without data");
      for (let j = 0; j < ndatum; j++) {
        readEbitmap(r, "filename transition source types", false);
        r.skip(4, "filename transition new type");
      }
    }
  }
}

/**
 * Parse a binary kernel policy image. Throws {@linkcode PolicyFormatError}
 * (naming the offset and the field) for anything it does not understand:
 * another target platform, a version outside 24..35, table sizes that do not
 * match the version, a malformed or truncated section, or bytes left over.
 */
export function parseBinaryPolicy(bytes: Uint8Array): BinaryPolicy {
  const r = new Reader(bytes);
  const { version, config, oconNum } = readHeader(r);
  readEbitmap(r, "policy capabilities", false);
  readEbitmap(r, "permissive types", false);
  if (version >= V_NEVERAUDIT) readEbitmap(r, "neveraudit types", false);
  const symbols = readSymbols(r, version);

  const xperms: IoctlXpermEntry[] = [];
  const avtabAt = r.at;
  const nav = r.count("avtab entry count", 12);
  for (let i = 0; i < nav; i++) readAvtabEntry(r, { version, conditional: false, sink: xperms });
  const condAt = r.at;
  const ncond = readCondList(r, { version, symbols, sink: xperms });

  const nrt = r.count("role transition count", 12);
  r.skip(nrt * (version >= V_ROLETRANS ? 16 : 12), "role transitions");
  const nra = r.count("role allow count", 8);
  r.skip(nra * 8, "role allows");
  if (version >= V_FILENAME_TRANS) skipFilenameTransitions(r, version);
  skipOcontexts(r, { version, oconNum });
  const ngenfs = r.count("genfs count", 8);
  for (let i = 0; i < ngenfs; i++) {
    const fsLen = r.u32("genfs fs name length");
    r.skip(fsLen, "genfs fs name");
    const n = r.count("genfs entry count", 8);
    for (let j = 0; j < n; j++) {
      const nameLen = r.u32("genfs path length");
      r.skip(nameLen, "genfs path");
      r.skip(4, "genfs class");
      skipContext(r, "genfs");
    }
  }
  const nrange = r.count("range transition count", 12);
  for (let i = 0; i < nrange; i++) {
    r.skip(12, "range transition types and class");
    skipRange(r, "range transition");
  }
  const typeAttrMap: number[][] = [];
  for (let i = 0; i < symbols.typeCount; i++) {
    const bits = readEbitmap(r, `type ${i + 1} attributes`, true)!;
    typeAttrMap.push(bits);
  }
  if (r.at !== bytes.length) r.fail(`${bytes.length - r.at} bytes after the last section`);

  for (const x of xperms) {
    if (x.tclass < 1 || x.source < 1 || x.target < 1) {
      throw new PolicyFormatError(
        `xperm entry with value 0 (source ${x.source} target ${x.target} class ${x.tclass})`,
        avtabAt,
      );
    }
  }
  const attrCache = new Map<number, ReadonlySet<number>>();
  const booleans = new Map<string, { value: number; state: boolean }>();
  for (const [value, b] of symbols.booleans) booleans.set(b.name, { value, state: b.state });
  return {
    version,
    mls: (config & CONFIG_MLS) !== 0,
    classes: symbols.classes,
    types: symbols.types,
    attributes: symbols.attributes,
    booleans,
    typeCount: symbols.typeCount,
    avtabEntries: nav + ncond,
    ioctlXperms: xperms,
    sections: { avtab: avtabAt, condList: condAt, end: r.at },
    typeAttributes(typeValue: number): ReadonlySet<number> {
      if (!Number.isInteger(typeValue) || typeValue < 1 || typeValue > symbols.typeCount) {
        throw new RangeError(`type value ${typeValue} is not in 1..${symbols.typeCount}`);
      }
      let s = attrCache.get(typeValue);
      if (s === undefined) {
        // the kernel adds the type itself ("the degenerate case"); bits are value - 1
        s = new Set([typeValue, ...typeAttrMap[typeValue - 1].map((b) => b + 1)]);
        attrCache.set(typeValue, s);
      }
      return s;
    },
  };
}

/** The question: may `sourceType` issue ioctl `command` on a `tclass` object of `targetType`? */
export interface IoctlXpermQuery {
  /** The subject's type name (third field of its context). */
  sourceType: string;
  /** The object's type name. */
  targetType: string;
  /** Class name, e.g. `blk_file`. */
  tclass: string;
  /** The ioctl command, low 16 bits as the kernel passes them (SG_IO: 0x2285). */
  command: number;
}

/** The extended-permission part of the kernel's ioctl decision. */
export type IoctlXpermDecision =
  /** No xperm rule for (source, target, class): the `ioctl` permission alone decides. */
  | { kind: "no-rules" }
  /** Xperm rules apply and list the command. */
  | { kind: "allowed"; rules: number }
  /** Xperm rules apply and do not list the command: the kernel refuses the ioctl. */
  | { kind: "denied"; rules: number; why: string };

function testBit(map: Uint32Array, bit: number): boolean {
  return ((map[bit >>> 5] >>> (bit & 31)) & 1) === 1;
}

/**
 * The kernel's extended-permission decision for one ioctl command, from the
 * rules of `policy`. Mirrors Linux 6.1: every matching xperm entry (allow,
 * auditallow or dontaudit) switches filtering on for the (source, target,
 * class); the command then needs an `allowxperm` entry for its driver
 * (IOCTLDRIVER) or for the driver and function (IOCTLFUNCTION). Throws
 * (RangeError naming it) when a type or class is not in the policy, or a
 * matching entry has an xperm kind other than ioctl function/driver: the
 * caller fails closed.
 */
export function decideIoctlXperm(policy: BinaryPolicy, query: IoctlXpermQuery): IoctlXpermDecision {
  const cls = policy.classes.get(query.tclass);
  if (cls === undefined) {
    throw new RangeError(`class "${query.tclass}" is not in the loaded policy`);
  }
  const s = policy.types.get(query.sourceType);
  if (s === undefined) {
    throw new RangeError(`type "${query.sourceType}" is not in the loaded policy`);
  }
  const t = policy.types.get(query.targetType);
  if (t === undefined) {
    throw new RangeError(`type "${query.targetType}" is not in the loaded policy`);
  }
  if (!Number.isInteger(query.command) || query.command < 0 || query.command > 0xffff) {
    throw new RangeError(`ioctl command ${query.command} is not a 16-bit value`);
  }
  const sattrs = policy.typeAttributes(s);
  const tattrs = policy.typeAttributes(t);
  const matching = policy.ioctlXperms.filter((x) =>
    x.tclass === cls && sattrs.has(x.source) && tattrs.has(x.target)
  );
  if (matching.length === 0) return { kind: "no-rules" };
  const driver = query.command >>> 8;
  const fn = query.command & 0xff;
  const drivers = new Uint32Array(8);
  for (const x of matching) {
    if (x.kind === XPERMS_IOCTLDRIVER) {
      for (let i = 0; i < 8; i++) drivers[i] |= x.perms[i];
    } else if (x.kind === XPERMS_IOCTLFUNCTION) {
      drivers[x.driver >>> 5] |= 1 << (x.driver & 31);
    } else {
      throw new RangeError(
        `xperm kind ${x.kind} on class ${query.tclass} is not an ioctl function or driver map`,
      );
    }
  }
  const cmd = `0x${query.command.toString(16).padStart(4, "0")}`;
  if (!testBit(drivers, driver)) {
    return {
      kind: "denied",
      rules: matching.length,
      why: `no xperm rule names ioctl driver 0x${driver.toString(16)} (command ${cmd})`,
    };
  }
  const allowed = new Uint32Array(8);
  let used = false;
  for (const x of matching) {
    if (x.rule !== "allowxperm") continue;
    if (x.kind === XPERMS_IOCTLFUNCTION) {
      if (x.driver !== driver) continue;
      used = true;
      for (let i = 0; i < 8; i++) allowed[i] |= x.perms[i];
    } else if (testBit(x.perms, driver)) {
      used = true;
      allowed.fill(0xffffffff);
    }
  }
  if (!used || !testBit(allowed, fn)) {
    return {
      kind: "denied",
      rules: matching.length,
      why: `ioctl command ${cmd} is not in the allowxperm rules`,
    };
  }
  return { kind: "allowed", rules: matching.length };
}
