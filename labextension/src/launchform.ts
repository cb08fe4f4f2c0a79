import { IKindOption, ILauncherOption, ILaunchOptions } from './api';
import { Actions, ILaunch } from './actions';
import { button, field, h, input, select, splitCommand, syncOptions } from './dom';
import { HubModel } from './model';
import { LAUNCHERS, MODES, SERVER_KINDS } from './tokens';

/** An option as the form shows it: a kind's or a launcher's, in one shape. */
interface IOption {
  key: string;
  help: string;
  type: 'text' | 'int' | 'bool' | 'choice';
  default: unknown;
  choices: string[];
  required: boolean;
  minimum: number;
}

type Control = HTMLInputElement | HTMLSelectElement;

function fromKind(o: IKindOption): IOption {
  return { ...o, required: false };
}

function fromLauncher(o: ILauncherOption, described: ILaunchOptions | null, launcher: string) {
  const rules = described?.rules;
  const offered = launcher === 'ssh' && o.key === 'host' ? (rules?.ssh_hosts ?? []) : [];
  const preset = launcher === 'slurm' ? rules?.slurm_defaults?.[o.key] : undefined;
  return {
    key: o.key,
    help: o.help,
    // A hub that offers only some ssh hosts: choose among them (the launch rules refuse others).
    type: offered.length ? 'choice' : o.type,
    default: preset ?? (offered.length ? offered[0] : null),
    choices: offered,
    required: o.required,
    minimum: 1
  } as IOption;
}

/**
 * The launch form, built from what the hub describes (GET /launch-options): a field per option
 * of the chosen kind and launcher, with its help as a hint, checked as the user types; a launch
 * is sent only when every field is valid.
 */
export class LaunchForm {
  readonly node: HTMLDetailsElement;

  constructor(
    private model: HubModel,
    private actions: Actions,
    private session: HTMLSelectElement
  ) {
    this._kind = select('kind', SERVER_KINDS, 'builtin');
    this._launcher = select('launcher', LAUNCHERS, 'local');
    this._mode = select('mode', MODES, 'reverse');
    this._command = input('command');
    this._kindFields = h('div', { class: 'pc-grid pc-options', 'data-options': 'kind' });
    this._launcherFields = h('div', { class: 'pc-grid pc-options', 'data-options': 'launcher' });
    this._kindHint = h('div', { class: 'pc-hint', 'data-hint': 'kind' });
    this._launcherHint = h('div', { class: 'pc-hint', 'data-hint': 'launcher' });
    this._kind.addEventListener('change', () => this._build());
    this._launcher.addEventListener('change', () => this._build());
    const launch = () => {
      const spec = this.spec(true);
      if (spec) {
        void this.actions.launch(spec);
      }
    };
    const agent = () => {
      const spec = this.spec(true, false);
      if (spec) {
        void this.actions.agentCommand({
          kind: spec.kind,
          session: spec.session,
          options: spec.options,
          command: spec.command
        });
      }
    };
    this.node = h(
      'details',
      { class: 'pc-form', 'data-form': 'launch' },
      h('summary', {}, 'Launch a server'),
      h(
        'div',
        { class: 'pc-grid' },
        field('Kind', this._kind),
        field('Launcher', this._launcher),
        field('Session', this.session),
        field('Mode', this._mode)
      ),
      this._kindHint,
      this._kindFields,
      this._checked('command', field('Command', this._command)),
      this._launcherHint,
      this._launcherFields,
      h(
        'div',
        { class: 'pc-actions' },
        button('Launch', launch, { class: 'jp-mod-accept' }),
        button('Copy agent command', agent, {
          title:
            'A shell line that starts this server by hand on a remote host; it phones home here'
        })
      )
    );
    this.node.addEventListener('input', () => this.spec(false));
    this.node.addEventListener('change', () => this.spec(false));
    this._build();
  }

  /** Follow the hub's description (kinds, launchers the hub runs, modes). */
  render(): void {
    const d = this.model.launchOptions;
    syncOptions(this._kind, d?.kinds.map(k => k.name) ?? SERVER_KINDS, 'builtin');
    const runs = (d?.launchers ?? this.model.launchers).filter(l => l.hub_runs).map(l => l.name);
    syncOptions(this._launcher, runs.length ? runs : LAUNCHERS, 'local');
    syncOptions(this._mode, d?.modes ?? MODES, 'reverse');
    const key = JSON.stringify([d, this._kind.value, this._launcher.value]);
    if (key !== this._built) {
      this._build();
    }
  }

  /**
   * The launch the form describes, or null when a field is wrong: each wrong field says why
   * under it. `all`: also flag required fields left empty (on submit, not while typing).
   */
  spec(all: boolean, withLauncher = true): ILaunch | null {
    const errors = new Map<string, string>();
    const options = this._values(this._kindOptions, 'options', errors, all);
    const launcherOptions = withLauncher
      ? this._values(this._launcherOptions, 'launcher_options', errors, all)
      : {};
    const command = splitCommand(this._command.value);
    const joined = command.join(' ');
    const kind = this.model.launchOptions?.kinds.find(k => k.name === this._kind.value);
    if (kind?.needs_command ?? this._kind.value === 'command') {
      const legs = ['{port}', '{unix}', '{fd}'].filter(p => joined.includes(p));
      if (!command.length) {
        if (all) {
          errors.set('command', 'the program to run, e.g. python3 -m http.server {port}');
        }
      } else if (legs.length !== 1) {
        errors.set('command', 'put exactly one of {port}, {unix} or {fd} where it listens');
      } else if (options.probe && options.probe !== 'port' && legs[0] !== '{port}') {
        errors.set('command', `probe ${options.probe} needs the program to listen on {port}`);
      }
      if (options.probe === 'log' && !options.log_regex) {
        errors.set('options.log_regex', 'probe log needs the regular expression to wait for');
      }
    } else if (command.length) {
      errors.set('command', `only the command kind runs a program line, not ${this._kind.value}`);
    }
    for (const el of this.node.querySelectorAll<HTMLElement>('[data-error-for]')) {
      const message = errors.get(el.dataset.errorFor ?? '') ?? '';
      el.textContent = message;
      el.hidden = !message;
      el.parentElement
        ?.querySelector('input, select')
        ?.setAttribute('aria-invalid', message ? 'true' : 'false');
    }
    if (errors.size) {
      if (all) {
        const first = [...errors.keys()][0];
        this.node
          .querySelector<HTMLElement>(`[data-error-for="${first}"]`)
          ?.parentElement?.querySelector<HTMLElement>('input, select')
          ?.focus();
      }
      return null;
    }
    return {
      kind: this._kind.value,
      launcher: this._launcher.value,
      session: this.session.value || 'default',
      mode: this._mode.value,
      options,
      launcher_options: launcherOptions,
      command
    };
  }

  private _values(
    described: IOption[],
    prefix: string,
    errors: Map<string, string>,
    all: boolean
  ): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const o of described) {
      const name = `${prefix}.${o.key}`;
      const el = this.node.querySelector<Control>(`[name="${name}"]`);
      if (!el) {
        continue;
      }
      if (o.type === 'bool') {
        if ((el as HTMLInputElement).checked !== Boolean(o.default)) {
          out[o.key] = (el as HTMLInputElement).checked;
        }
        continue;
      }
      const raw = el.value.trim();
      if (!raw) {
        if (o.required && all) {
          errors.set(name, `${o.key} is required: ${o.help}`);
        }
        continue;
      }
      if (o.type === 'int') {
        if (!/^[0-9]+$/.test(raw) || Number(raw) < o.minimum) {
          errors.set(
            name,
            `${o.key} must be a whole number of at least ${o.minimum}, not '${raw}'`
          );
          continue;
        }
        if (Number(raw) !== o.default) {
          out[o.key] = Number(raw);
        }
      } else if (raw !== o.default || o.required) {
        out[o.key] = raw;
      }
    }
    return out;
  }

  /** (Re)build the option fields for the chosen kind and launcher. */
  private _build(): void {
    const d = this.model.launchOptions;
    const kind = d?.kinds.find(k => k.name === this._kind.value);
    const launcher = (d?.launchers ?? this.model.launchers).find(
      l => l.name === this._launcher.value
    );
    this._built = JSON.stringify([d, this._kind.value, this._launcher.value]);
    this._kindOptions = (kind?.options ?? []).map(fromKind);
    this._launcherOptions = (launcher?.options ?? []).map(o =>
      fromLauncher(o, d, this._launcher.value)
    );
    this._kindHint.textContent = kind?.summary ?? '';
    this._launcherHint.textContent = launcher?.summary ?? '';
    this._kindFields.replaceChildren(...this._kindOptions.map(o => this._field(o, 'options')));
    this._launcherFields.replaceChildren(
      ...this._launcherOptions.map(o => this._field(o, 'launcher_options'))
    );
    const commandKind = kind?.needs_command ?? this._kind.value === 'command';
    this._command.placeholder = commandKind
      ? 'python3 -m http.server --bind 127.0.0.1 {port}'
      : `none: ${this._kind.value} runs its own program`;
  }

  private _field(o: IOption, prefix: string): HTMLElement {
    const name = `${prefix}.${o.key}`;
    let control: Control;
    if (o.type === 'choice') {
      control = select(name, o.choices, String(o.default ?? o.choices[0]));
    } else if (o.type === 'bool') {
      control = input(name, { type: 'checkbox', checked: Boolean(o.default) });
    } else {
      control = input(name, {
        inputmode: o.type === 'int' ? 'numeric' : undefined,
        placeholder: o.default !== null && o.default !== undefined ? String(o.default) : '',
        required: o.required
      });
    }
    control.dataset.option = o.key;
    control.title = o.help;
    const label = `${o.key}${o.required ? ' *' : ''}`;
    return this._checked(name, field(label, control), o.help);
  }

  /** A field with its hint (the option's help) and its error line under it. */
  private _checked(name: string, node: HTMLElement, hint?: string): HTMLElement {
    if (hint) {
      node.append(h('span', { class: 'pc-field-hint' }, hint));
    }
    node.append(h('span', { class: 'pc-invalid', 'data-error-for': name, hidden: true }));
    return node;
  }

  private _kind: HTMLSelectElement;
  private _launcher: HTMLSelectElement;
  private _mode: HTMLSelectElement;
  private _command: HTMLInputElement;
  private _kindFields: HTMLElement;
  private _launcherFields: HTMLElement;
  private _kindHint: HTMLElement;
  private _launcherHint: HTMLElement;
  private _kindOptions: IOption[] = [];
  private _launcherOptions: IOption[] = [];
  private _built = '';
}
