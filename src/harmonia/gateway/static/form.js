// Payload fields generated from a model's input JSON schema (as pydantic writes it). Simple
// properties get native controls; nested objects, arrays of objects and unions get a JSON box.
// The gateway is the one validator: empty fields are left out so its defaults apply, and its 422
// answers are shown next to the field they name.

const PRIMARY = new Set(["instructions", "text", "prompt", "idea", "theme", "lyrics", "duration_s", "seed"]);
const LONG_TEXT = new Set(["instructions", "text", "prompt", "idea", "lyrics"]);

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

/** {schema without a null branch, nullable}. pydantic writes `X | None` as anyOf [X, null]. */
function unwrap(prop) {
  if (Array.isArray(prop.anyOf)) {
    const branches = prop.anyOf.filter((b) => b.type !== "null");
    if (branches.length === 1) {
      const { anyOf: _drop, ...rest } = prop;
      return { ...rest, ...branches[0] };
    }
  }
  return prop;
}

function kindOf(prop) {
  if (prop.const !== undefined) return "const";
  if (Array.isArray(prop.enum)) return "enum";
  if (prop.type === "boolean") return "boolean";
  if (prop.type === "integer") return "integer";
  if (prop.type === "number") return "number";
  if (prop.type === "string") return "string";
  if (prop.type === "array" && prop.items && prop.items.type === "string" && !prop.items.enum) return "list";
  return "json";
}

const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function labelFor(name, prop) {
  const title = prop.title || name.replace(/_/g, " ");
  const unit = /_s$/.test(name) ? " (s)" : /_bpm$/.test(name) ? " (BPM)" : "";
  return title.replace(/ S$| Bpm$/, "") + unit;
}

// JSON numbers past 2^53 arrive rounded; say "about" rather than print a wrong exact number
function bound(n) {
  if (n === undefined) return "…";
  return Math.abs(n) > Number.MAX_SAFE_INTEGER ? `about ${n.toExponential(2)}` : String(n);
}

function hintFor(prop, kind, required) {
  const parts = [];
  if (prop.description) parts.push(prop.description.split("\n")[0]);
  if (prop.minimum !== undefined || prop.maximum !== undefined) {
    parts.push(`${bound(prop.minimum ?? prop.exclusiveMinimum)} to ${bound(prop.maximum)}`);
  }
  if (kind === "list") parts.push("comma-separated");
  if (kind === "json") parts.push("JSON");
  if (kind === "tag") parts.push("the fields below depend on it");
  if (prop.default !== undefined && prop.default !== null && kind !== "boolean" && kind !== "enum") {
    parts.push(`default ${JSON.stringify(prop.default)}`);
  }
  if (required) parts.push("required");
  return parts.join(" · ");
}

function control(id, name, prop, kind) {
  const examples = Array.isArray(prop.examples) ? prop.examples : [];
  switch (kind) {
    case "tag": {
      const select = el("select", { id, name });
      for (const v of prop.enum) select.append(el("option", { value: v }, String(v)));
      return select;
    }
    case "enum": {
      const select = el("select", { id, name });
      select.append(el("option", { value: "" }, prop.default !== undefined ? `default (${prop.default})` : "—"));
      for (const v of prop.enum) select.append(el("option", { value: JSON.stringify(v) }, String(v)));
      return select;
    }
    case "boolean": {
      const box = el("input", { id, name, type: "checkbox" });
      box.checked = prop.default === true;
      return box;
    }
    case "integer":
    case "number":
      return el("input", {
        id,
        name,
        type: "number",
        step: kind === "integer" ? "1" : "any",
        min: prop.minimum,
        max: prop.maximum,
        placeholder: examples[0] ?? "",
        inputmode: kind === "integer" ? "numeric" : "decimal",
      });
    case "string":
      if (LONG_TEXT.has(name) || (prop.maxLength ?? 0) > 2000) {
        return el("textarea", { id, name, rows: "3", placeholder: examples[0] ?? "" });
      }
      return el("input", { id, name, type: "text", placeholder: examples[0] ?? "" });
    case "list":
      return el("input", { id, name, type: "text", placeholder: examples[0]?.join?.(", ") ?? "" });
    default:
      return el("textarea", { id, name, rows: "4", class: "mono", spellcheck: "false" });
  }
}

/** For a discriminated union (pydantic's tagged `A | B`): {tag, variants: [[value, schema]]}. */
function taggedUnion(schema) {
  const tag = schema && schema.discriminator && schema.discriminator.propertyName;
  if (!tag || !Array.isArray(schema.oneOf)) return null;
  const defs = schema.$defs || {};
  const variants = [];
  for (const branch of schema.oneOf) {
    const resolved = branch.$ref ? defs[branch.$ref.split("/").pop()] : branch;
    const value = resolved && resolved.properties && resolved.properties[tag] && resolved.properties[tag].const;
    if (value === undefined) return null;
    variants.push([value, resolved]);
  }
  return { tag, variants };
}

/**
 * Build the fields for `schema` into `primary` (the common ones) and `advanced` (the rest).
 * Returns {collect(), showError(field, message), clearErrors(), focus(name)}.
 */
export function buildPayloadForm(schema, primary, advanced) {
  primary.replaceChildren();
  advanced.replaceChildren();
  const fields = new Map();
  const union = taggedUnion(schema);
  let whole = false; // no usable properties: one JSON box for the whole payload

  function addField(name, prop, kind, required, main) {
    const id = `field-${name}`;
    const wrap = el("div", { class: kind === "boolean" ? "field check" : "field" });
    const label = el("label", { for: id }, labelFor(name, prop));
    const input = control(id, name, prop, kind);
    const hint = el("p", { id: `${id}-hint`, class: "hint" }, hintFor(prop, kind, required));
    const error = el("p", { id: `${id}-error`, class: "field-error", role: "alert" });
    input.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    if (required) input.setAttribute("aria-required", "true");
    if (kind === "boolean") wrap.append(input, label, hint, error);
    else wrap.append(label, input, hint, error);
    (main ? primary : advanced).append(wrap);
    fields.set(name, { input, error, kind, prop, wrap });
    return input;
  }

  function addObject(objectSchema, skip) {
    const props = objectSchema.properties;
    const required = new Set(objectSchema.required || []);
    const entries = Object.entries(props).map(([name, p]) => [name, unwrap(p)]);
    // a model with none of the usual headline fields shows all of its fields up front
    const anyPrimary = entries.some(([name]) => required.has(name) || PRIMARY.has(name));
    for (const [name, prop] of entries) {
      const kind = kindOf(prop);
      if (kind === "const" || name === skip) continue; // fixed by the schema; nothing to choose
      const main = !anyPrimary || required.has(name) || PRIMARY.has(name);
      addField(name, prop, kind, required.has(name), main);
    }
  }

  if (union) {
    const values = union.variants.map(([value]) => value);
    const select = addField(union.tag, { title: capital(union.tag), enum: values }, "tag", true, true);
    const pick = () => {
      for (const [name, f] of fields) {
        if (name !== union.tag) {
          f.wrap.remove();
          fields.delete(name);
        }
      }
      addObject(union.variants.find(([value]) => value === select.value)[1], union.tag);
    };
    select.addEventListener("change", pick);
    pick();
  } else if (schema && schema.properties) {
    addObject(schema);
  } else {
    whole = true;
    addField("payload", { title: "Payload", description: "the whole payload, as JSON" }, "json", true, true);
  }

  function showError(name, message) {
    const f = fields.get(name);
    if (!f) return false;
    f.error.textContent = message;
    f.input.setAttribute("aria-invalid", "true");
    const details = f.input.closest("details");
    if (details) details.open = true;
    return true;
  }

  function read(name, f) {
    const raw = f.input.value;
    const path = whole ? "payload" : `payload.${name}`;
    switch (f.kind) {
      case "tag":
        return raw;
      case "boolean":
        return f.input.checked === (f.prop.default === true) ? undefined : f.input.checked;
      case "enum":
        return raw === "" ? undefined : JSON.parse(raw);
      case "integer":
      case "number": {
        if (f.input.validity.badInput) throw new FieldError(path, "not a number");
        if (raw.trim() === "") return undefined;
        if (f.kind === "integer" && /^-?\d+$/.test(raw.trim())) {
          const big = BigInt(raw.trim());
          return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(big)
            : big;
        }
        return Number(raw);
      }
      case "list": {
        const items = raw.split(",").map((s) => s.trim()).filter(Boolean);
        return items.length ? items : undefined;
      }
      case "json":
        if (raw.trim() === "") return undefined;
        try {
          return JSON.parse(raw);
        } catch (exc) {
          throw new FieldError(path, `not valid JSON (${exc.message})`);
        }
      default:
        return raw === "" ? undefined : raw;
    }
  }

  return {
    /** The payload object; throws FieldError for input the browser cannot even encode. */
    collect() {
      if (whole) return read("payload", fields.get("payload")) ?? {};
      const payload = {};
      for (const [name, f] of fields) {
        const value = read(name, f);
        if (value !== undefined) payload[name] = value;
      }
      return payload;
    },
    /** Show the gateway's message at `field` ("payload.duration_s", "payload"); false if unknown. */
    showError(field, message) {
      if (!field) return false;
      const path = field.split(".");
      if (path[0] !== "payload") return false;
      if (whole) return showError("payload", message);
      // a tagged union's errors are located under the tag value: payload.<tag>.<field>
      if (union && path.length > 2 && path[1] === fields.get(union.tag).input.value) path.splice(1, 1);
      if (union && path.length === 1) return showError(union.tag, message);
      return path.length > 1 && showError(path[1], message);
    },
    clearErrors() {
      for (const f of fields.values()) {
        f.error.textContent = "";
        f.input.removeAttribute("aria-invalid");
      }
    },
    focus(name) {
      fields.get(name)?.input.focus();
    },
  };
}

export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}
