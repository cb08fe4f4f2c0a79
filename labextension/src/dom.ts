/** A tiny hyperscript: the panel is plain DOM rebuilt from the model. */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A labelled form field: `label` above the control. */
export function field(label: string, control: HTMLElement): HTMLElement {
  return h('label', { class: 'pc-field' }, h('span', { class: 'pc-field-label' }, label), control);
}

export function select(name: string, values: readonly string[], value?: string): HTMLSelectElement {
  const el = h(
    'select',
    { name, class: 'jp-mod-styled' },
    ...values.map(v => h('option', { value: v }, v))
  );
  if (value !== undefined) {
    el.value = value;
  }
  return el;
}

export function input(name: string, attrs: Attrs = {}): HTMLInputElement {
  return h('input', { name, class: 'jp-mod-styled', ...attrs });
}

export function button(label: string, onclick: () => void, attrs: Attrs = {}): HTMLButtonElement {
  const { class: extra, ...rest } = attrs;
  return h(
    'button',
    {
      type: 'button',
      ...rest,
      class: `jp-Button pc-button ${extra ?? ''}`,
      onclick: () => onclick()
    },
    label
  );
}

/** Seconds since the epoch (number) or an ISO string, as a short local date and time. */
export function when(value: number | string | null | undefined): string {
  if (value === null || value === undefined || value === '') {
    return '–';
  }
  const d = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (isNaN(d.getTime())) {
    return String(value);
  }
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

/** Just the date (the time is in the tooltip of `when`). */
export function day(value: string | null | undefined): string {
  const d = value ? new Date(value) : null;
  return d && !isNaN(d.getTime()) ? d.toLocaleDateString(undefined, { dateStyle: 'short' }) : '–';
}

/** How long ago, for "last seen". */
export function ago(seconds: number | null | undefined): string {
  if (!seconds) {
    return 'never';
  }
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) {
    return `${Math.round(s)} s ago`;
  }
  if (s < 3600) {
    return `${Math.round(s / 60)} min ago`;
  }
  if (s < 86400) {
    return `${Math.round(s / 3600)} h ago`;
  }
  return when(seconds);
}

/** A shell-like split for the `command` kind's program line (quotes, no expansion). */
export function splitCommand(text: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    out.push(m[1] ?? m[2] ?? m[3]);
  }
  return out;
}

/** Replace a select's options in place, keeping the chosen value when it is still offered. */
export function syncOptions(
  el: HTMLSelectElement,
  values: readonly string[],
  preferred?: string | null
): void {
  const current = el.value;
  const same =
    values.length === el.options.length && values.every((v, i) => el.options[i].value === v);
  if (!same) {
    el.replaceChildren(...values.map(v => h('option', { value: v }, v)));
  }
  if (values.includes(current)) {
    el.value = current;
  } else if (preferred && values.includes(preferred)) {
    el.value = preferred;
  }
}
