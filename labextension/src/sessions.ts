import { ICert } from './api';
import { Actions } from './actions';
import { button, day, field, h, input, select, when } from './dom';
import { HubModel } from './model';
import { KEY_TYPES, LEVELS } from './tokens';

/** Sessions: the list (click one to select it), its CA and certificates, and a create form. */
export class SessionsSection {
  readonly node: HTMLElement;

  constructor(
    private model: HubModel,
    private actions: Actions
  ) {
    this._list = h('div', { class: 'pc-list' });
    this._detail = h('div', { class: 'pc-detail' });
    this.node = h(
      'details',
      { class: 'pc-section', 'data-section': 'sessions', open: true },
      h('summary', { class: 'pc-section-title' }, 'Sessions'),
      this._list,
      this._detail,
      this._form()
    );
  }

  render(): void {
    const m = this.model;
    this._list.replaceChildren(
      ...(m.sessions.length
        ? m.sessions.map(s =>
            h(
              'div',
              {
                class: `pc-row pc-session${s.name === m.selected ? ' pc-mod-selected' : ''}`,
                'data-session': s.name,
                title: 'Select this session',
                onclick: () => m.select(s.name)
              },
              h('span', { class: 'pc-name' }, s.name),
              m.followed?.session === s.name
                ? h(
                    'span',
                    {
                      class: 'pc-chip pc-followed',
                      title: `the active notebook ${m.followed.notebook} uses this session`
                    },
                    'notebook'
                  )
                : null,
              h('span', { class: 'pc-chip' }, s.level),
              h('span', { class: 'pc-muted' }, s.key_type),
              h('span', {
                class: `pc-dot${s.phone_home ? ' pc-mod-on' : ''}`,
                title: s.phone_home ? `listening on ${s.phone_home}` : 'not listening'
              })
            )
          )
        : [h('div', { class: 'pc-empty' }, 'No session yet: create one below.')])
    );
    const d = m.session;
    if (!d) {
      this._detail.replaceChildren();
      return;
    }
    const certs = d.certificates.filter(c => !c.for_friend);
    this._detail.replaceChildren(
      h(
        'dl',
        { class: 'pc-facts' },
        h('dt', {}, 'CA SHA-256'),
        h('dd', { class: 'pc-mono pc-fingerprint', title: d.ca_sha256 }, fingerprint(d.ca_sha256)),
        h('dt', {}, 'CA expires'),
        h('dd', {}, when(d.ca_not_after)),
        h('dt', {}, 'Phone home'),
        h(
          'dd',
          { class: 'pc-mono' },
          d.phone_home ??
            button('Start listening', () => void this.actions.openSession(d.name), {
              'data-action': 'open'
            })
        )
      ),
      h(
        'table',
        { class: 'pc-table' },
        h(
          'thead',
          {},
          h('tr', {}, h('th', {}, 'Certificate'), h('th', {}, 'Role'), h('th', {}, 'Expires'))
        ),
        h(
          'tbody',
          {},
          ...(certs.length
            ? certs.map(certRow)
            : [h('tr', {}, h('td', { colspan: 3, class: 'pc-empty' }, 'none issued'))])
        )
      )
    );
  }

  private _form(): HTMLElement {
    const name = input('name', { placeholder: 'e.g. cfd-run', required: true });
    const keyType = select('key_type', KEY_TYPES, 'ec-p256');
    const days = input('days', { type: 'number', min: 1, value: 365 });
    const level = select('level', LEVELS, 'mutual');
    const create = () => {
      if (!name.value.trim()) {
        name.focus();
        return;
      }
      void this.actions.createSession(
        name.value.trim(),
        keyType.value,
        Number(days.value) || 365,
        level.value
      );
      name.value = '';
    };
    return h(
      'details',
      { class: 'pc-form', 'data-form': 'session' },
      h('summary', {}, 'New session'),
      h(
        'div',
        { class: 'pc-grid' },
        field('Name', name),
        field('Key type', keyType),
        field('Lifetime (days)', days),
        field('Level', level)
      ),
      button('Create session', create, { class: 'jp-mod-accept' })
    );
  }

  private _list: HTMLElement;
  private _detail: HTMLElement;
}

/** `ab:cd:…` shortened to its first and last bytes; the whole one is in the tooltip. */
export function fingerprint(sha: string): string {
  const hex = sha.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  const pairs = hex.match(/.{2}/g) ?? [];
  return pairs.length > 12
    ? `${pairs.slice(0, 6).join(':')} … ${pairs.slice(-4).join(':')}`
    : pairs.join(':');
}

export function certRow(c: ICert): HTMLElement {
  return h(
    'tr',
    { class: `pc-cert pc-status-${c.status}` },
    h('td', { title: `serial ${c.serial}` }, c.name),
    h('td', {}, c.role),
    h('td', { title: when(c.not_after) }, c.status === 'valid' ? day(c.not_after) : c.status)
  );
}
