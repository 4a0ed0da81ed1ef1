"""Make ``mmbackbones::<path>`` config references work the way ``mmdet::`` does.

mmengine resolves ``pkg::path`` only for packages in its ``MODULE2PACKAGE`` table, and finds the
package through ``get_installed_path``, which points at site-packages even for an editable
install. We add our entry to the table and answer ``get_installed_path('mmbackbones')`` with the
imported package's directory; every other package goes to mmengine unchanged. Our configs are
shipped as ``mmbackbones/.mim/configs`` (a link to the repository's ``configs/``).

It takes effect once ``mmbackbones`` is imported: our tools import it before reading a config;
elsewhere, import mmbackbones before ``Config.fromfile`` of a config whose ``_base_`` uses it.
"""
import os.path as osp

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))


def register_config_scope() -> None:
    import mmengine.config.config as config_module
    from mmengine.config.utils import MODULE2PACKAGE

    MODULE2PACKAGE.setdefault('mmbackbones', 'mmbackbones')
    original = config_module.get_installed_path
    if getattr(original, '_mmbackbones', False):
        return

    def get_installed_path(package: str) -> str:
        if package == 'mmbackbones':
            return PACKAGE_DIR
        return original(package)

    get_installed_path._mmbackbones = True  # type: ignore[attr-defined]
    config_module.get_installed_path = get_installed_path


def resolve_config_path(path: str) -> str:
    """``'mmbackbones::vovnet/x.py'`` or ``'mmdet::retinanet/y.py'`` -> a file path; other paths
    are returned unchanged. Lets our tools take a packaged config as their CONFIG argument."""
    if '::' not in path:
        return path
    register_config_scope()
    import mmengine.config.config as config_module
    from mmengine.config.utils import MODULE2PACKAGE

    scope, _, rel = path.partition('::')
    if scope not in MODULE2PACKAGE:
        raise ValueError(f"config: unknown scope {scope!r} in {path!r}; use one of "
                         f"{', '.join(sorted(MODULE2PACKAGE))}.")
    root = config_module.get_installed_path(MODULE2PACKAGE[scope])
    return osp.join(root, '.mim', 'configs', rel)
