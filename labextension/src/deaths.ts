/**
 * A kernel that died by itself (OOM-killed, evicted, node lost...) says why where the user
 * is looking: a JupyterLab notification, once per death, from `GET kernels`' `died` field
 * (which the server keeps once the kernel restarted). Polls on its own, so the sidebar need
 * not be open; the sidebar's own refreshes feed it too.
 */
import { Notification } from '@jupyterlab/apputils';

import { IKernel, IKernelList, requestAPI } from './api';

/** How often the kernels are asked for deaths (ms). */
export const DEATH_POLL_INTERVAL = 3000;
/** Deaths older than this when the page loaded were told before (ms). */
const TOLD_BEFORE = 5 * 60 * 1000;

export class DeathNotifier {
  private _told = new Set<string>();
  private _since = Date.now() - TOLD_BEFORE;
  private _timer: number | null = null;

  /** Notify the deaths not told yet. */
  check(kernels: IKernel[]): void {
    for (const kernel of kernels) {
      const died = kernel.died;
      if (!died || died.at * 1000 < this._since) {
        continue;
      }
      const key = `${kernel.id}@${died.at}`;
      if (this._told.has(key)) {
        continue;
      }
      this._told.add(key);
      Notification.warning(
        `Kernel ${kernel.name} (${kernel.execution_config}) died and was restarted: ${died.reason}`,
        { autoClose: false }
      );
    }
  }

  start(): void {
    if (this._timer !== null) {
      return;
    }
    this._timer = window.setInterval(() => {
      if (!document.hidden) {
        requestAPI<IKernelList>('kernels')
          .then(list => this.check(list.kernels))
          .catch(() => undefined); // the sidebar shows why the server did not answer
      }
    }, DEATH_POLL_INTERVAL);
  }
}

/** The page's one notifier. */
export const deathNotifier = new DeathNotifier();
