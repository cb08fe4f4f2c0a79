import { refreshIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { Actions } from './actions';
import { h } from './dom';
import { FriendsSection } from './friends';
import { HubModel } from './model';
import { ServersSection } from './servers';
import { SessionsSection } from './sessions';
import { PANEL_ID } from './tokens';

/** The left side panel: a header (live or not, refresh) and the three sections. */
export class ParaconnectPanel extends Widget {
  constructor(
    readonly model: HubModel,
    actions: Actions
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('pc-panel');
    this.title.caption = 'paraconnect';
    this._live = h('span', { class: 'pc-live', title: 'events websocket' });
    this._error = h('div', { class: 'pc-error', hidden: true });
    const refresh = h('button', {
      type: 'button',
      class: 'pc-icon-button',
      title: 'Reload everything from the hub',
      'aria-label': 'Refresh',
      onclick: () => void model.reload()
    });
    refreshIcon.element({ container: refresh, height: '16px', width: '16px' });
    this._sections = [
      new SessionsSection(model, actions),
      new ServersSection(model, actions),
      new FriendsSection(model, actions)
    ];
    this.node.append(
      h('header', { class: 'pc-header' }, h('h2', {}, 'paraconnect'), this._live, refresh),
      this._error,
      ...this._sections.map(s => s.node)
    );
    model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this.model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    const m = this.model;
    this._live.textContent = m.live ? 'live' : 'offline';
    this._live.classList.toggle('pc-mod-live', m.live);
    this._error.hidden = !m.error;
    this._error.textContent = m.error ?? '';
    this._sections.forEach(s => s.render());
  }

  private _live: HTMLElement;
  private _error: HTMLElement;
  private _sections: { node: HTMLElement; render(): void }[];
}
