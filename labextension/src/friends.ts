import { ICert } from './api';
import { Actions } from './actions';
import { button, field, h, input, select, syncOptions, when } from './dom';
import { HubModel } from './model';

/** Friends: bundles (PKCS#12 with a passphrase) issued for people elsewhere; download, revoke. */
export class FriendsSection {
  readonly node: HTMLElement;

  constructor(
    private model: HubModel,
    private actions: Actions
  ) {
    this._list = h('div', { class: 'pc-list' });
    this._session = select('session', []);
    this._session.addEventListener('change', () => this.model.select(this._session.value));
    this.node = h(
      'details',
      { class: 'pc-section', 'data-section': 'friends', open: true },
      h('summary', { class: 'pc-section-title' }, 'Friends'),
      field('Session', this._session),
      this._list,
      this._form()
    );
  }

  render(): void {
    const m = this.model;
    syncOptions(
      this._session,
      m.sessions.map(s => s.name),
      m.selected
    );
    if (m.selected) {
      this._session.value = m.selected;
    }
    // No session, nothing to issue from: the form stays shut (and says why) until one exists,
    // then opens once by itself.
    const none = !m.sessions.length;
    this._issue.dataset.disabled = String(none);
    this._issueTitle.textContent = none
      ? 'Issue a bundle (create a session first)'
      : 'Issue a bundle';
    if (none) {
      this._issue.open = false;
    } else if (!this._opened) {
      this._opened = true;
      this._issue.open = true;
    }
    const friends = m.selected ? (m.friends.get(m.selected) ?? []) : [];
    this._list.replaceChildren(
      ...(friends.length
        ? friends.map(f => this._row(f))
        : [h('div', { class: 'pc-empty' }, 'No bundle issued in this session.')])
    );
  }

  private _row(c: ICert): HTMLElement {
    const session = this.model.selected ?? '';
    return h(
      'div',
      {
        class: `pc-row pc-friend pc-status-${c.status}`,
        'data-friend': c.name,
        'data-serial': String(c.serial)
      },
      h('span', { class: 'pc-name' }, c.name),
      h('span', { class: `pc-badge pc-tone-${c.status === 'valid' ? 'ok' : 'bad'}` }, c.status),
      h(
        'span',
        { class: 'pc-muted', title: `serial ${c.serial}` },
        c.status === 'revoked' ? `revoked ${when(c.revoked_at)}` : `expires ${when(c.not_after)}`
      ),
      h(
        'span',
        { class: 'pc-actions pc-right' },
        c.status === 'valid'
          ? [
              button('Download', () => void this.actions.download(session, c), {
                'data-action': 'download'
              }),
              button('Revoke', () => void this.actions.revoke(session, c), {
                class: 'jp-mod-warn',
                'data-action': 'revoke'
              })
            ]
          : null
      )
    );
  }

  private _form(): HTMLElement {
    const name = input('friend', { placeholder: 'e.g. bob' });
    const pass = input('passphrase', {
      type: 'password',
      autocomplete: 'new-password',
      placeholder: 'send it apart from the file'
    });
    const days = input('days', { type: 'number', min: 1, value: 7 });
    const node = input('unique_id', {
      placeholder: "their 'paraconnect unique-id'",
      title:
        "At level mutual a certificate works only on the node it names: ask your friend to run 'paraconnect unique-id'"
    });
    const issue = async () => {
      const session = this.model.selected;
      if (!session || !name.value.trim() || !pass.value) {
        (!name.value.trim() ? name : pass).focus();
        return;
      }
      const cert = await this.actions.issueFriend(
        session,
        name.value.trim(),
        pass.value,
        Number(days.value) || 7,
        node.value.trim()
      );
      if (cert) {
        name.value = '';
        pass.value = '';
        node.value = '';
      }
    };
    this._issueTitle = h('summary', {}, 'Issue a bundle');
    this._issue = h(
      'details',
      { class: 'pc-form', 'data-form': 'friend' },
      this._issueTitle,
      h(
        'div',
        { class: 'pc-grid' },
        field('Friend', name),
        field('Passphrase', pass),
        field('Expires in (days)', days)
      ),
      field("Friend's node ID (level mutual)", node),
      button('Issue bundle', () => void issue(), { class: 'jp-mod-accept' })
    );
    this._issue.addEventListener('toggle', () => {
      if (this._issue.open && !this.model.sessions.length) {
        this._issue.open = false;
      }
    });
    return this._issue;
  }

  private _list: HTMLElement;
  private _session: HTMLSelectElement;
  private _issue!: HTMLDetailsElement;
  private _issueTitle!: HTMLElement;
  private _opened = false;
}
