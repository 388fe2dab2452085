"""Structure depictions as inline SVG (RDKit), cached per SMILES."""

from __future__ import annotations

import functools
import html

__all__ = ["depict"]


@functools.lru_cache(maxsize=4096)
def depict(smiles: str, width: int = 180, height: int = 120) -> str:
    """Return an SVG drawing of ``smiles``; an unparsable one gets a labelled empty box.

    Examples
    --------
    >>> depict("CCO").startswith("<svg")
    True
    >>> "not a molecule" in depict("C1CC")
    True
    """
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    import qemlflow.chem.molecule  # noqa: F401  (silences RDKit's parse warnings)

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    label = html.escape(smiles)
    if mol is None:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="depiction invalid" width="{width}" '
            f'height="{height}" role="img" aria-label="{label}"><title>{label}</title>'
            f'<text x="8" y="{height // 2}" font-size="11">not a molecule</text></svg>'
        )
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    # A transparent background, so depictions sit on the page colour.
    drawer.drawOptions().clearBackground = False  # type: ignore[assignment]
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    # Drop the XML prolog (inlined in HTML) and tag it for the stylesheet and the tests.
    svg = svg[svg.index("<svg") :]
    return svg.replace(
        "<svg ", f'<svg class="depiction" role="img" aria-label="{label}" ', 1
    ).replace(">", f"><title>{label}</title>", 1)
